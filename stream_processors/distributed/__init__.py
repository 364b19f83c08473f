"""The distributed runtime: Faust workers that read Debezium's Kafka topics into the lake.

`topics` names things, `lane` applies one topic-partition exactly once (offsets recorded in
the lake), `txgate` keeps source transactions whole, `outputs` publishes dead letters and
live topics, `app` wires it all into a Faust app.
"""
