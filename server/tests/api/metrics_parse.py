"""Reads Prometheus's text exposition format on stdin with the Prometheus project's own
parser (prometheus_client) and prints what it understood as JSON: each family's type and
help, and every sample with its labels and value. A line it cannot parse fails here."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = {}
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {"type": family.type, "help": family.documentation}
    for sample in family.samples:
        samples.append({"name": sample.name, "labels": sample.labels, "value": sample.value})
json.dump({"families": families, "samples": samples}, sys.stdout)
