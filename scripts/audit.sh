#!/usr/bin/env bash
# Dependency audit of the pinned set (requirements.lock) with pip-audit.
#
# Exit status: 0 = every pinned package audited, no known vulnerability;
#              1 = known vulnerabilities (listed);
#              2 = pip-audit is not installed (`make venv` installs the dev extras);
#              3 = the advisory service could not be reached (or answered for no package):
#                  NO audit was performed;
#              4 = audited, but some pinned packages could not be (listed): incomplete.
# Environment: AUDIT_REQUIREMENTS (default requirements.lock), AUDIT_SERVICE (pypi | osv,
# default pypi), AUDIT_TIMEOUT (seconds per request, default 20), BIN (default .venv/bin).
set -u
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
LOCK=${AUDIT_REQUIREMENTS:-requirements.lock}
SERVICE=${AUDIT_SERVICE:-pypi}
TIMEOUT=${AUDIT_TIMEOUT:-20}
OUT=build/audit
REPORT=$OUT/report.json
ERRLOG=$OUT/pip-audit.stderr

if [ ! -x "$BIN/pip-audit" ]; then
    echo "audit: NOT RUN - pip-audit is not installed in $BIN (make venv installs the dev extras)"
    exit 2
fi
mkdir -p "$OUT"
rm -f "$REPORT" "$ERRLOG"

echo "audit: $LOCK ($(grep -cE '^[A-Za-z0-9]' "$LOCK") pinned packages) against the '$SERVICE' advisory service"
# --no-deps --disable-pip: the lock pins the whole set, so audit exactly it, installing nothing.
"$BIN/pip-audit" --requirement "$LOCK" --no-deps --disable-pip \
    --vulnerability-service "$SERVICE" --timeout "$TIMEOUT" --progress-spinner off \
    --format json --output "$REPORT" 2>"$ERRLOG"
rc=$?

if [ ! -s "$REPORT" ]; then
    # pip-audit writes its report only once every query was answered.
    echo "audit: NOT PERFORMED - pip-audit exited $rc without a report; the advisory service"
    echo "audit: ($SERVICE) could not be reached or answered an error. This is not a pass."
    echo "audit: last lines of $ERRLOG:"
    tail -n 5 "$ERRLOG" | sed 's/^/    /'
    exit 3
fi

"$BIN/python" - "$REPORT" "$rc" <<'PY'
import json
import sys

with open(sys.argv[1], encoding="utf-8") as handle:
    report = json.load(handle)
deps = report.get("dependencies", [])
skipped = [d for d in deps if "skip_reason" in d]
vulnerable = [d for d in deps if d.get("vulns")]
audited = len(deps) - len(skipped)
if deps and not audited:
    # Every pinned package was released on PyPI, so "not found" for all of them means the
    # advisory endpoint (pypi.org/pypi/NAME/VERSION/json) is not served from here.
    print(f"audit: NOT PERFORMED - the advisory service answered for none of the {len(deps)} pinned")
    print(f"audit: packages (first: {skipped[0]['skip_reason']}).")
    print("audit: No vulnerability data was checked. This is not a pass.")
    sys.exit(3)
print(f"audit: {audited} of {len(deps)} pinned packages audited")
for dep in vulnerable:
    for vuln in dep["vulns"]:
        fix = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
        aliases = ", ".join(vuln.get("aliases") or [])
        print(f"VULNERABLE {dep['name']}=={dep['version']}: {vuln['id']} ({aliases}) fixed in: {fix}")
for dep in skipped:
    print(f"NOT AUDITED {dep['name']}: {dep['skip_reason']}")
if vulnerable:
    count = sum(len(d["vulns"]) for d in vulnerable)
    print(f"audit: FAIL - {count} known vulnerabilities in {len(vulnerable)} packages")
    sys.exit(1)
if skipped:
    print(f"audit: INCOMPLETE - no known vulnerability in the {audited} audited packages, "
          f"{len(skipped)} could not be audited")
    sys.exit(4)
if sys.argv[2] != "0":
    print(f"audit: FAIL - pip-audit exited {sys.argv[2]}")
    sys.exit(1)
print(f"audit: PASS - no known vulnerability in the {audited} pinned packages")
PY
