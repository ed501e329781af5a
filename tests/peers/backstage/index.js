// The Backstage test peer: a backend with the catalog plugin, and, when
// STAGEDOOR_PEER_AUTH=1, the auth plugin with the guest provider (tests/token_backstage_e2e.rs).
// Config comes from app-config.yaml (plus app-config.auth.yaml for auth) and the
// APP_CONFIG_* env overrides set by the test.
const { createBackend } = require('@backstage/backend-defaults');
const backend = createBackend();
backend.add(import('@backstage/plugin-catalog-backend'));
if (process.env.STAGEDOOR_PEER_AUTH === '1') {
  backend.add(import('@backstage/plugin-auth-backend'));
  backend.add(import('@backstage/plugin-auth-backend-module-guest-provider'));
}
backend.start();
