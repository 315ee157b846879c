"""Fake of the `openspace` CLI module: only the config helper the worker shim calls.

_load_config(args) builds an OpenSpaceConfig from the CLI-style namespace and OPENSPACE_*
environment variables, printing a status line to stdout as the real CLI does.
"""
import os
import sys

from . import OpenSpaceConfig


def _load_config(args):
    kw = {}
    model = getattr(args, "model", None) or os.environ.get("OPENSPACE_MODEL")
    if model:
        kw["llm_model"] = model
    max_iter = getattr(args, "max_iterations", None)
    kw["grounding_max_iterations"] = max_iter or int(os.environ.get("OPENSPACE_MAX_ITERATIONS", "20"))
    if getattr(args, "timeout", None) is not None:
        kw["llm_timeout"] = args.timeout
    if getattr(args, "log_level", None):
        kw["log_level"] = args.log_level
    kw["enable_recording"] = os.environ.get("OPENSPACE_ENABLE_RECORDING", "true").lower() in ("true", "1", "yes")
    scope = os.environ.get("OPENSPACE_BACKEND_SCOPE")
    if scope:
        kw["backend_scope"] = [b.strip() for b in scope.split(",") if b.strip()]
    print("Using default configuration (fake)")
    return OpenSpaceConfig(**kw)


if __name__ == "__main__":
    sys.stderr.write("this fake openspace package has no command line; use openspace-worker\n")
    sys.exit(2)
