// Offline OpenID Provider for stagedoor's token tests (panva/oidc-provider 9.13.3, Node 20).
// Adapted from /work/shared/reference/test-peers.md §5. Issues JWT access tokens (typ at+jwt)
// via client_credentials, signed RS256 (resource urn:test:api) or ES256 (resource urn:test:api-es).
//
// Env: PORT (required), HOST=127.0.0.1, ISSUER=http://HOST:PORT, KEYDIR (required), TTL=3600,
//      KEYS="kid:alg,..." (default "rs-1:RS256,ec-1:ES256"). The first key of each alg signs.
// A key KEYDIR/<kid>.pem is generated on first use and reused afterwards, so a restart with
// KEYS="rs-2:RS256,ec-2:ES256,rs-1:RS256,ec-1:ES256" rotates the signing keys while the old
// public keys stay published (the key-rotation test in tests/token_oidc.rs).
//
// Browser sign-in (issue 13), on when SSO_REDIRECT_URIS is set: an authorization-code
// client SSO_CLIENT_ID (default "stagedoor") / SSO_CLIENT_SECRET (default
// "stagedoor-secret"), redirect URIs SSO_REDIRECT_URIS and post-logout URIs
// SSO_POST_LOGOUT_URIS (comma-separated), client_secret_basic, PKCE (S256) required,
// consent skipped for it. The login page is oidc-provider's dev interaction (a form:
// hidden prompt=login, `login` = the account id, any `password`). Accounts: alice
// (team-a), bob (team-b), carol (team-a, in userinfo only, not in the ID token), many
// (400 groups); every account has a verified email <id>@example.com.
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

const SSO_URIS = (process.env.SSO_REDIRECT_URIS || '').split(',').filter(Boolean);
const SSO_CLIENT_ID = process.env.SSO_CLIENT_ID || 'stagedoor';
const ssoClients = SSO_URIS.length === 0 ? [] : [{
  client_id: SSO_CLIENT_ID,
  client_secret: process.env.SSO_CLIENT_SECRET || 'stagedoor-secret',
  grant_types: ['authorization_code'],
  response_types: ['code'],
  redirect_uris: SSO_URIS,
  post_logout_redirect_uris: (process.env.SSO_POST_LOGOUT_URIS || '').split(',').filter(Boolean),
  token_endpoint_auth_method: 'client_secret_basic',
  require_auth_time: true,
  scope: 'openid email profile groups',
}];

const GROUPS = {
  alice: ['team-a'],
  bob: ['team-b'],
  carol: ['team-a'],
  many: Array.from({ length: 400 }, (_, i) => `group-with-a-longish-name-${String(i).padStart(4, '0')}`),
};

async function findAccount(ctx, id) {
  if (!/^[a-z][a-z0-9-]{0,30}$/.test(id)) return undefined;
  return {
    accountId: id,
    async claims(use) {
      const groups = GROUPS[id] || [];
      // carol's groups are only in userinfo: stagedoor must fetch them there.
      const inToken = id !== 'carol' || use === 'userinfo';
      return { sub: id, email: `${id}@example.com`, email_verified: true,
               ...(inToken ? { groups } : {}) };
    },
  };
}

const provider = new Provider(ISSUER, {
  jwks,
  findAccount,
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  // Claims of the granted scopes go into the ID token too (not only userinfo).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  // First-party client: no consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    if (ctx.oidc.client.clientId !== SSO_CLIENT_ID) return undefined;
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
  clients: [...ssoClients,
    { client_id: 'svc', client_secret: 'svc-secret', grant_types: ['client_credentials'],
      response_types: [], redirect_uris: [], scope: 'read write' },
    { client_id: 'reader', client_secret: 'reader-secret', grant_types: ['client_credentials'],
      response_types: [], redirect_uris: [], scope: 'read' },
  ],
  scopes: ['openid', 'email', 'profile', 'groups', 'read', 'write'],
  ttl: { ClientCredentials: TTL },
  features: {
    devInteractions: { enabled: SSO_URIS.length > 0 },
    rpInitiatedLogout: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // The sign-in client gets an opaque access token for userinfo, not an API token.
      defaultResource: (ctx, client) => (client?.clientId === SSO_CLIENT_ID ? undefined : 'urn:test:api'),
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
