"""Runs signing and verification cases through the reference `standardwebhooks` package.

Reads a JSON array of cases on stdin and writes a JSON array of results on stdout, in order:
  {"op": "verify", "secret", "id", "timestamp", "signature", "body"} -> {"ok": true} or {"ok": false, "error": "..."}
  {"op": "sign", "secret", "id", "timestamp", "body"}                -> {"signature": "v1,..."}
The reference library checks timestamps against its own clock (five minutes either way).
"""

import json
import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def run(case):
    webhook = Webhook(case["secret"])
    if case["op"] == "sign":
        when = datetime.fromtimestamp(case["timestamp"], tz=timezone.utc)
        return {"signature": webhook.sign(case["id"], when, case["body"])}
    headers = {
        "webhook-id": case["id"],
        "webhook-timestamp": str(case["timestamp"]),
        "webhook-signature": case["signature"],
    }
    try:
        webhook.verify(case["body"].encode("utf-8"), headers, json_parse=False)
        return {"ok": True}
    except WebhookVerificationError as error:
        return {"ok": False, "error": str(error)}


def main():
    cases = json.load(sys.stdin)
    json.dump([run(case) for case in cases], sys.stdout)


if __name__ == "__main__":
    main()
