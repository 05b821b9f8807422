"""ViLT's metrics as `evaluate` modules: `vqa_score` (equal to the official VQA evaluation), `vqa_score_lenient`,
`nlvr2_accuracy`, `retrieval_recall`, `mlm_accuracy`, `itm_accuracy`, `wpa_pointing` (word-patch alignment)."""
