"""The run side: one run of a recipe on a model (``pipeline.run``), its folder (``outdir``), report,
lock file, metrics, progress lines, and the loading of a user's model file (``usermodel``).
It drives a backend through ``lwdsl.backend``; nothing below it imports it."""
