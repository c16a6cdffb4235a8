"""Sandboxed execution of Python step code in confined worker processes.

Engine side: settings, pool, process, protocol, errors, hardening, bench. The boot/ directory
holds only what runs inside a worker.
"""
