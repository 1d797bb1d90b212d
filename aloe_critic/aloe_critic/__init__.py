"""ALOE learning core: bags to chunked transitions, ensemble critic for the current policy, advantage-weighted flow matching, baselines, evaluation and bag replay node."""
