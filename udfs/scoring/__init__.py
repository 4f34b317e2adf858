"""BERT scoring: the model loader, the pandas UDFs and the scoring phase of the score job."""
