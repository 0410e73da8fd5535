"""Loaded by schemathesis (SCHEMATHESIS_HOOKS): send generated payroll bodies as plain text."""

import schemathesis

schemathesis.serializer.alias(["text/csv", "application/x-ndjson"], "text/plain")
