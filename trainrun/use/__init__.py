"""Using a trained run: opening it (trained.py), `trainrun-predict` (inputs.py reads what to predict, predict.py
predicts and is the command, outputs.py writes the rows and the evaluation) and `trainrun-export`."""
