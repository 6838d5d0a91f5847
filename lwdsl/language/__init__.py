"""The language side: recipe text -> typed, validated plan. Never imports a framework or the run.

``grammar/`` (Lark) and ``syntax`` read text; ``binding``/``values``/``fields`` bind words to the
typed steps of ``specs/``; ``validate`` checks a whole recipe; ``plan`` is the ``Recipe``;
``compiler`` is the entry (``parse``/``load``); ``formatter``, ``jsonplan`` and ``diff`` write it back.
"""
