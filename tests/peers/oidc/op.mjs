// Offline OpenID Provider for stagedoor's token tests (panva/oidc-provider 9.13.3, Node 20).
// Adapted from /work/shared/reference/test-peers.md §5. Issues JWT access tokens (typ at+jwt)
// via client_credentials, signed RS256 (resource urn:test:api) or ES256 (resource urn:test:api-es).
//
// Env: PORT (required), HOST=127.0.0.1, ISSUER=http://HOST:PORT, KEYDIR (required), TTL=3600,
//      KEYS="kid:alg,..." (default "rs-1:RS256,ec-1:ES256"). The first key of each alg signs.
// A key KEYDIR/<kid>.pem is generated on first use and reused afterwards, so a restart with
// KEYS="rs-2:RS256,ec-2:ES256,rs-1:RS256,ec-1:ES256" rotates the signing keys while the old
// public keys stay published (the key-rotation test in tests/token_oidc.rs).
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import Provider, { errors } from 'oidc-provider';

const PORT = Number(process.env.PORT);
const HOST = process.env.HOST || '127.0.0.1';
const KEYDIR = process.env.KEYDIR;
const TTL = Number(process.env.TTL || 3600);
if (!PORT || !KEYDIR) {
  console.error('PORT and KEYDIR are required');
  process.exit(2);
}
// ISSUER overrides the advertised issuer (the compose demo listens on 0.0.0.0 but is
// reached as http://oidc:9000).
const ISSUER = process.env.ISSUER || `http://${HOST}:${PORT}`;

function privateJwk(kid, alg) {
  const file = `${KEYDIR}/${kid}.pem`;
  if (!existsSync(file)) {
    const { privateKey } = alg.startsWith('ES')
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(file, privateKey.export({ format: 'pem', type: 'pkcs8' }));
  }
  return { ...createPrivateKey(readFileSync(file)).export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const KEYS = process.env.KEYS || 'rs-1:RS256,ec-1:ES256';
const jwks = { keys: KEYS.split(',').map((e) => { const [kid, alg] = e.split(':'); return privateJwk(kid, alg); }) };

const RESOURCES = {
  'urn:test:api': { audience: 'urn:test:api', alg: 'RS256' },
  'urn:test:api-es': { audience: 'urn:test:api', alg: 'ES256' },
};

const provider = new Provider(ISSUER, {
  jwks,
  clients: [
    { client_id: 'svc', client_secret: 'svc-secret', grant_types: ['client_credentials'],
      response_types: [], redirect_uris: [], scope: 'read write' },
    { client_id: 'reader', client_secret: 'reader-secret', grant_types: ['client_credentials'],
      response_types: [], redirect_uris: [], scope: 'read' },
  ],
  scopes: ['read', 'write'],
  ttl: { ClientCredentials: TTL },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:test:api',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        const r = RESOURCES[resourceIndicator];
        if (!r) throw new errors.InvalidTarget();
        return { scope: 'read write', audience: r.audience, accessTokenTTL: TTL,
                 accessTokenFormat: 'jwt', jwt: { sign: { alg: r.alg } } };
      },
    },
  },
});
provider.listen(PORT, HOST, () => console.log(`oidc-provider listening on ${ISSUER}`));
