#!/usr/bin/env bash
# A catalog repository's pull-request check, for any CI (docs/policy-tests.md):
#
#   examples/catalog-ci/check.sh CONFIG CASES_DIR DECISION_LOG > comment.md
#
# CONFIG is stagedoor's configuration pointing at the changed catalog (a file source
# over the pull request's checkout), CASES_DIR holds `stagedoor test` case files, and
# DECISION_LOG a recent sample of the agent's decision log (JSON lines). It fails
# (non-zero) when the catalog has annotation errors, conflicts, unknown principals or
# skipped documents, or when a case fails; otherwise it prints what the change does
# to the logged traffic, as markdown for the pull request comment (stdout). Progress
# and failures go to stderr. STAGEDOOR names the binary (default: stagedoor on PATH).
set -euo pipefail
stagedoor=${STAGEDOOR:-stagedoor}
config=$1
cases=$2
log=$3

echo "== policy show --strict" >&2
"$stagedoor" policy show --strict --config "$config" >&2
echo "== stagedoor test" >&2
"$stagedoor" test --config "$config" "$cases"/*.yaml >&2
echo "== stagedoor replay" >&2
"$stagedoor" replay --against "$config" --log "$log" --format markdown
