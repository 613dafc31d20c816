"""The ops dashboard: ``GET /dashboard``, server-rendered HTML and SVG."""
