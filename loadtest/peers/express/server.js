// A peer of the service for `make loadtest`: express-oauth2-jwt-bearer's `auth()` middleware guarding
// GET /secured/ping in an Express app, configured as its README's RS256 example with the issuer's JWKS URI.
//
//     PORT=8000 JWT_JWKS_FILE=jwks.json JWT_ISSUER=https://issuer/ JWT_AUDIENCE=https://api node server.js
//
// The JWKS is the harness's file, served by this same process on a second loopback port (any free one) so that
// the library fetches it over HTTP as from an identity provider, once, then keeps it in its own cache; nothing
// leaves the machine. GET /ping answers with no verification: what Express alone costs. One process, as the
// library's and Express's examples run it: jose hands each RSA
// verification to libuv's thread pool, so one process uses more than one core, and the load test compares CPU per
// request, not req/s. With PEER_READY_DIR set, a file named after the pid is written there once both ports listen.
import { readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";

import express from "express";
import { auth } from "express-oauth2-jwt-bearer";

const { PORT, JWT_JWKS_FILE, JWT_ISSUER, JWT_AUDIENCE, PEER_READY_DIR } = process.env;
if (!PORT || !JWT_JWKS_FILE || !JWT_ISSUER || !JWT_AUDIENCE) {
  console.error("server.js: PORT, JWT_JWKS_FILE, JWT_ISSUER and JWT_AUDIENCE are required");
  process.exit(2);
}

const jwks = readFileSync(JWT_JWKS_FILE);
const keys = http.createServer((req, res) => {
  res.writeHead(200, { "Content-Type": "application/json" }).end(jwks);
});
await new Promise((resolve) => keys.listen(0, "127.0.0.1", resolve));

const app = express();
app.disable("x-powered-by");
app.get("/ping", (req, res) => {
  res.json({ message: "All good. You don't need to be authenticated to call this" });
});
app.get(
  "/secured/ping",
  auth({
    issuer: JWT_ISSUER,
    audience: JWT_AUDIENCE,
    jwksUri: `http://127.0.0.1:${keys.address().port}/.well-known/jwks.json`,
    tokenSigningAlg: "RS256",
  }),
  (req, res) => {
    res.json({ message: "All good. You only get this message if you're authenticated" });
  },
);
// The library passes an UnauthorizedError (status 401, WWW-Authenticate in `headers`) to next(): answered here
// with them, as Express's own final handler would, but without its stack trace on stderr for every refusal.
app.use((err, req, res, next) => {
  res.status(err.status ?? 500).set(err.headers ?? {}).json({ error: err.code ?? "server_error" });
});

app.listen(Number(PORT), "127.0.0.1", (error) => {
  if (error) throw error; // Express 5 hands a failed listen (port taken) to this callback
  if (PEER_READY_DIR) writeFileSync(join(PEER_READY_DIR, String(process.pid)), "");
});
