"""Child process of ``genre bench`` (``python -m genre_edge.bench ARGS_JSON``): one fresh measurement."""
import json
import sys

from .harness import child_main

res = child_main(json.loads(sys.argv[1]))
print("RESULT " + json.dumps(res))
