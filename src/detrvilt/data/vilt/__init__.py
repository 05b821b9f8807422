"""ViLT's data: the offline BERT tokenizer, the task collators (whole-word masking MLM, ITM, VQA, NLVR2, retrieval),
the loaders of the official formats (Karpathy captions, VQAv2, NLVR2), VQA answer handling and the synthetic scenes."""
