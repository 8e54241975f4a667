"""OmniTransfer (Sun et al., "Efficient Multivariate Time Series Anomaly Detection Through Transfer Learning for
Large-Scale Software Systems"): W-HAC clustering of entities (``cluster``) and the adaptive full / partial transfer
of a cluster's base model to a new entity (``transfer``). Model-agnostic over llmad's torch window detectors."""
