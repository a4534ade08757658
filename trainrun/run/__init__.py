"""One run, top to bottom: build the parts (build.py), train (trainer.py), stop (stopping.py), checkpoint
(checkpoint.py), log to TensorBoard (logger.py) and the console (console.py), several processes
(distributed.py), the learning-rate finder (tune.py)."""
