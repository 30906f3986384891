"""Evaluation of the world model against MuJoCo's ground truth."""
