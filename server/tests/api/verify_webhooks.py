"""Verifies webhook deliveries with the Standard Webhooks reference library (PyPI's
`standardwebhooks`), as a receiver would (loaded by server/tests/api/webhooks.rs).

Reads a JSON list on stdin, each item `{"secret", "headers", "body"}`, and prints a JSON
list: for each, `{"verified": payload}` or `{"refused": why}`.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

results = []
for item in json.load(sys.stdin):
    try:
        payload = Webhook(item["secret"]).verify(item["body"], item["headers"])
        results.append({"verified": payload})
    except WebhookVerificationError as e:
        results.append({"refused": str(e)})
json.dump(results, sys.stdout)
