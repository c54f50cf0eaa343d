"""Settings: a tokenizer, retain/forget corpora and an `evaluate(model)` that returns retain/forget metrics."""
