"""Generation: from compositions to ranked, validated candidates (and run folders).

``api`` (``crystalforge.generate``, the one implementation the CLI calls) ->
``prompts`` (specs from compositions or prompt files) -> ``components`` (one builder per
plugin kind) -> ``pipeline`` (search, post-process, validate, score; each text judged once)
-> ``ranking`` (the one ranking rule) -> ``runfolder`` (resumable folders, ``summary.csv``).
``candidate`` is the result type, ``export`` writes other formats, ``shard`` splits work
across torchrun processes.
"""
