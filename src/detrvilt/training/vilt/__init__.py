"""ViLT's training: arguments, the official optimizer groups and schedule, `ViltTrainer`, the task metrics from raw
outputs, the recipes the scripts call (pretraining, VQA, NLVR2, retrieval), and the demo."""
