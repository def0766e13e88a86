"""Data Docs page views that keep GX's compiled page templates between builds.

GX renders every Data Docs page through a new jinja Environment, so each build compiled the same few dozen templates
again, most of a small suite's Data Docs time (docs/contracts.md, "Gates and Data Docs"); every gate's build is on
its task's critical path. These views are GX's own with jinja's bytecode cache set: a template is compiled once per
machine (jinja's per-user cache directory, keyed by the template's source checksum and the Python version) and
loaded from there afterwards; where that directory cannot be used, once per process. The pages are the ones GX's
own views render. ``expectations.runner._context`` names these classes in the site's config; GX imports this module
only when it builds Data Docs.
"""

from __future__ import annotations

import jinja2
from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView


class _ProcessBytecodeCache(jinja2.BytecodeCache):
    """Compiled templates kept in this process, for a machine where jinja's cache directory is not usable."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


def _bytecode_cache() -> jinja2.BytecodeCache:
    try:
        return jinja2.FileSystemBytecodeCache()  # <tmp>/_jinja2-cache-<uid>, mode 0700, checked by jinja
    except (OSError, RuntimeError):  # no usable temporary directory
        return _ProcessBytecodeCache()


BYTECODE_CACHE = _bytecode_cache()


class CachedJinjaPageView(DefaultJinjaPageView):
    """GX's page view (validation results, expectation suites) with the bytecode cache."""

    def __init__(self, custom_styles_directory=None, custom_views_directory=None) -> None:
        super().__init__(custom_styles_directory, custom_views_directory)
        self.env.bytecode_cache = BYTECODE_CACHE


class CachedJinjaIndexPageView(DefaultJinjaIndexPageView):
    """GX's index page view with the bytecode cache."""

    def __init__(self, custom_styles_directory=None, custom_views_directory=None) -> None:
        super().__init__(custom_styles_directory, custom_views_directory)
        self.env.bytecode_cache = BYTECODE_CACHE
