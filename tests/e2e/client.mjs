// A real DPoP client (panva's dpop for the proofs, fetch for the rest) of the provider in provider.mjs.
//
//   E2E_CLIENT_SECRET=... node client.mjs call   --issuer I --client-id C --resource R --url U
//   E2E_CLIENT_SECRET=... node client.mjs proofs --issuer I --client-id C --resource R
//                                               [--bearer] [--proof 'GET U']... [--foreign-proof 'GET U']...
//   (either takes --dpop-alg ES256|PS256|RS256|Ed25519, the DPoP key's algorithm; ES256 unless given)
//
// Both find the token endpoint by OpenID discovery and get an access token for the resource R with the client
// credentials grant, bound to a fresh key by a DPoP proof (RFC 9449 section 5), or a plain bearer token
// with --bearer. `call` then sends GET U with `Authorization: DPoP <token>` and a fresh proof, as a client of the
// API would. `proofs` sends nothing to the API: it prints proofs for the given "METHOD URL"s (with `ath` of the
// token) for the caller to send itself; --foreign-proof signs with another key than the one the token is bound to.
// Either prints one JSON object on stdout; any failure goes to stderr with exit status 1.
import { calculateThumbprint, generateKeyPair, generateProof } from 'dpop';
import { parseArgs } from 'node:util';

const { positionals: [mode], values: options } = parseArgs({
  allowPositionals: true,
  options: {
    issuer: { type: 'string' },
    'client-id': { type: 'string' },
    resource: { type: 'string' },
    scope: { type: 'string', default: 'read:messages' },
    url: { type: 'string' },
    bearer: { type: 'boolean', default: false },
    'dpop-alg': { type: 'string', default: 'ES256' },
    proof: { type: 'string', multiple: true, default: [] },
    'foreign-proof': { type: 'string', multiple: true, default: [] },
  },
});
const secret = process.env.E2E_CLIENT_SECRET;
if (!['call', 'proofs'].includes(mode) || !options.issuer || !options['client-id'] || !options.resource || !secret) {
  console.error('usage: see the top of client.mjs (E2E_CLIENT_SECRET, --issuer, --client-id, --resource)');
  process.exit(2);
}
if (mode === 'call' && !options.url) {
  console.error('client.mjs call: --url is required');
  process.exit(2);
}

async function json(response, what) {
  const text = await response.text();
  if (!response.ok) {
    throw new Error(`${what}: HTTP ${response.status}: ${text}`);
  }
  return JSON.parse(text);
}

async function discover(issuer) {
  const metadata = await json(await fetch(`${issuer}/.well-known/openid-configuration`), 'discovery');
  if (metadata.issuer !== issuer) {
    throw new Error(`discovery names issuer ${metadata.issuer}, not ${issuer}`);
  }
  return metadata;
}

// The token request; with a key, a DPoP proof binds the token to it. A provider may answer use_dpop_nonce
// once (RFC 9449 section 8): the request is repeated with the nonce it sent.
async function requestToken(tokenEndpoint, keyPair) {
  const body = new URLSearchParams({ grant_type: 'client_credentials', resource: options.resource });
  if (options.scope) {
    body.set('scope', options.scope);
  }
  const basic = Buffer.from(`${encodeURIComponent(options['client-id'])}:${encodeURIComponent(secret)}`);
  let nonce;
  for (let attempt = 0; attempt < 2; attempt += 1) {
    const headers = { authorization: `Basic ${basic.toString('base64')}` };
    if (keyPair) {
      headers.dpop = await generateProof(keyPair, tokenEndpoint, 'POST', nonce);
    }
    const response = await fetch(tokenEndpoint, { method: 'POST', headers, body });
    if (response.status === 400 && response.headers.has('dpop-nonce') && nonce === undefined) {
      nonce = response.headers.get('dpop-nonce');
      continue;
    }
    return json(response, 'token request');
  }
  throw new Error('token request: the provider asked for a DPoP nonce twice');
}

function parseTarget(target) {
  const [method, url, ...rest] = target.split(' ');
  if (!method || !url || rest.length) {
    throw new Error(`a proof target is "METHOD URL", not ${JSON.stringify(target)}`);
  }
  return { method, url };
}

async function proofsFor(keyPair, targets, accessToken) {
  const proofs = [];
  for (const { method, url } of targets.map(parseTarget)) {
    proofs.push({ htm: method, htu: url, proof: await generateProof(keyPair, url, method, undefined, accessToken) });
  }
  return proofs;
}

async function main() {
  const { token_endpoint: tokenEndpoint } = await discover(options.issuer);
  const keyPair = options.bearer ? undefined : await generateKeyPair(options['dpop-alg']);
  const token = await requestToken(tokenEndpoint, keyPair);
  const result = {
    access_token: token.access_token,
    token_type: token.token_type,
    expires_in: token.expires_in,
    scope: token.scope,
    jkt: keyPair ? await calculateThumbprint(keyPair.publicKey) : null,
  };

  if (mode === 'call') {
    const headers = { authorization: `${token.token_type} ${token.access_token}` };
    if (keyPair) {
      headers.dpop = await generateProof(keyPair, options.url, 'GET', undefined, token.access_token);
      result.proof = headers.dpop;
    }
    const response = await fetch(options.url, { headers });
    result.response = {
      status: response.status,
      body: await response.text(),
      www_authenticate: response.headers.get('www-authenticate'),
    };
  } else {
    // A proof needs a key: with --bearer the plain token still gets proofs, from a key it is not bound to.
    const proofKey = keyPair ?? (await generateKeyPair(options['dpop-alg']));
    const foreignKey = await generateKeyPair(options['dpop-alg']);
    result.proofs = await proofsFor(proofKey, options.proof, token.access_token);
    result.foreign_proofs = await proofsFor(foreignKey, options['foreign-proof'], token.access_token);
  }
  console.log(JSON.stringify(result));
}

main().catch((error) => {
  console.error(`client.mjs: ${error.message}`);
  process.exit(1);
});
