"""Sphinx extension: drop repeated <script> entries from every page.

sphinx-thebe registers its inline configuration script once per read phase, and a book that executes
notebooks goes through that phase twice (once with a reloaded environment), so pages declared
``const THEBE_JS_URL`` twice and the browser reported a SyntaxError on every page. Identical scripts are
harmless to drop.
"""

from __future__ import annotations


def _drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # An inline script's filename is None when registered and "" after a cached environment reloads.
        key = (getattr(script, "filename", script) or "", tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    """Register the handler (scripts are all registered by the time pages are written)."""
    app.connect("html-page-context", _drop_repeated_scripts, priority=999)  # after every script is added
    return {"parallel_read_safe": True, "parallel_write_safe": True}
