// The Backstage test peer: a backend with only the catalog plugin.
// Config comes from app-config.yaml plus APP_CONFIG_* env overrides set by the test.
const { createBackend } = require('@backstage/backend-defaults');
const backend = createBackend();
backend.add(import('@backstage/plugin-catalog-backend'));
backend.start();
