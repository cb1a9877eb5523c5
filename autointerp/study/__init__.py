"""The activation study: small causal LMs trained here, alike in everything but the MLP
activation, then explained as subject models and compared.

- `architecture`: the model, one MLP of four kinds (GELU, ReLU, SwiGLU, SoLU), registered with
  the transformers Auto classes;
- `tokenizer`: a byte-level BPE trained on the corpus;
- `data`: training windows, the held-out split, the batch order every model shares;
- `training`: one model's training run and its loss curve;
- `unigram`: the baseline every model must beat;
- `folders`: saving models and tokenizer whole;
- `comparison`: subject models side by side (any declared models, not only the study's);
- `plots`: the loss curves and the comparison as figures.
"""
