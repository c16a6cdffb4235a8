"""Importing litellm through Portico fetches nothing: engine.llm.client sets litellm's offline
switches itself, so this holds even when the process environment lacks them. Runs in a fresh
interpreter (this session has litellm imported already) whose DNS and connect are doubled by
recorders that refuse every non-loopback host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, socket, sys
attempts = []
real_getaddrinfo = socket.getaddrinfo
real_connect = socket.socket.connect

def getaddrinfo(host, *args, **kwargs):
    if host not in ("127.0.0.1", "::1", "localhost", None):
        attempts.append(f"getaddrinfo {host}")
        raise socket.gaierror(socket.EAI_NONAME, "refused by the test")
    return real_getaddrinfo(host, *args, **kwargs)

def connect(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
        attempts.append(f"connect {address}")
        raise ConnectionRefusedError("refused by the test")
    return real_connect(sock, address)

socket.getaddrinfo = getaddrinfo
socket.socket.connect = connect

import engine.steps.llm  # the step module alone must not import litellm
before = "litellm" in sys.modules
from engine.llm.client import load_litellm
litellm = load_litellm()
import os
print(json.dumps({
    "imported_before_first_use": before,
    "attempts": attempts,
    "env": {k: os.environ.get(k) for k in ("LITELLM_LOCAL_MODEL_COST_MAP", "LITELLM_OFFLINE_MODE")},
    "priced_gpt_4o_mini": "gpt-4o-mini" in litellm.model_cost,
}))
"""


def test_first_use_imports_litellm_offline_even_without_the_switches_set() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("LITELLM_") and not key.endswith("_API_KEY")
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {
        "imported_before_first_use": False,
        "attempts": [],
        "env": {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true"},
        "priced_gpt_4o_mini": True,  # the bundled price list was loaded instead
    }
