"""Gold models: SQL files over the consumer views, materialised into `<lake>/gold/<name>`.

`model.py` reads a model and what its SQL allows (inputs, incremental shape), `lineage.py`
derives column lineage, `refresh.py` materialises one model at pinned input versions,
`status.py` keeps each model's metadata, last refresh and failures where others (the status
page) read them, and `scheduler.py` decides when each model refreshes.
"""
