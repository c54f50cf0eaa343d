"""The one training engine (`engine.py`): every stage trains through `train(model, objective, batches, ...)` with its
own objective. It sits above the config (it reads `TrainConfig`) and the objectives, below the stages."""
