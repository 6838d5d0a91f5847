"""Backends, one subpackage per framework, imported lazily (see lwdsl.backend)."""
