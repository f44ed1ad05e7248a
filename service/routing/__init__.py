"""The routing engine: query embedding, model scoring, the decision, conversation stickiness."""
