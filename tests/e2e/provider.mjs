// A real OpenID provider (panva's oidc-provider) on loopback, issuing DPoP-bound JWT access tokens.
//
//   node provider.mjs --resource http://127.0.0.1:8123 [--resource ...] [--port 0] [--alg ES256]
//                     [--signing-key key.json] [--kid KID]
//
// --signing-key names a file holding the private JWK to sign with (a test that must forge or compare signatures
// makes it), else a key is made at start; --kid is its kid (default e2e-<alg>). One confidential client may use the client credentials grant for each resource (RFC 8707); the access
// token is a JWT (typ at+jwt) signed with a key made at start, bound to the client's DPoP key (cnf.jkt) when
// the token request carries a DPoP proof. Once listening it prints one JSON line on stdout: issuer, token
// endpoint, client id and secret, access-token alg. It serves until SIGTERM or until stdin closes, so a test
// runner that dies does not leave it behind.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: options } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.PROVIDER_PORT ?? '0' },
    resource: { type: 'string', multiple: true, default: [] },
    alg: { type: 'string', default: 'ES256' },
    'signing-key': { type: 'string' },
    kid: { type: 'string' },
  },
});
if (!options.resource.length) {
  console.error('provider.mjs: --resource <the API URL> is required');
  process.exit(2);
}

// The signing key for access tokens; its type follows the alg (P-256 for ES256, RSA-2048 for RS256/PS256).
const keyOptions = options.alg.startsWith('ES')
  ? ['ec', { namedCurve: { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' }[options.alg] }]
  : ['rsa', { modulusLength: 2048 }];
const privateJwk = options['signing-key']
  ? JSON.parse(readFileSync(options['signing-key'], 'utf8'))
  : generateKeyPairSync(...keyOptions).privateKey.export({ format: 'jwk' });
const signingKey = {
  ...privateJwk,
  kid: options.kid ?? `e2e-${options.alg.toLowerCase()}`,
  alg: options.alg,
  use: 'sig',
};

const client = { id: 'e2e-client', secret: randomBytes(24).toString('base64url') };

// Listen first: the issuer names the port, and with --port 0 the kernel picks it.
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(options.port), '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  scopes: ['read:messages'],
  clients: [
    {
      client_id: client.id,
      client_secret: client.secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      scope: 'read:messages',
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  // The client has no ID tokens, but its metadata defaults to RS256 ones, which need a key of that type.
  clientDefaults: { id_token_signed_response_alg: options.alg },
  // Set, so oidc-provider does not print a notice about its default on stdout, where the ready line goes.
  ttl: { ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 300 },
  // Every alg the dpop library makes proofs with (oidc-provider's default has only ES256, Ed25519 and EdDSA).
  enabledJWA: { dPoPSigningAlgValues: ['ES256', 'PS256', 'RS256', 'Ed25519', 'EdDSA'] },
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    dPoP: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // No resource parameter means an opaque token for the provider itself: the test always asks for one.
      defaultResource: () => undefined,
      getResourceServerInfo(ctx, resourceIndicator) {
        if (!options.resource.includes(resourceIndicator)) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: 'read:messages',
          audience: resourceIndicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
          jwt: { sign: { alg: options.alg } },
        };
      },
    },
  },
});

server.on('request', provider.callback());

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop).resume();

console.log(
  JSON.stringify({
    issuer,
    token_endpoint: `${issuer}/token`,
    client_id: client.id,
    client_secret: client.secret,
    alg: options.alg,
    resources: options.resource,
  }),
);
