"""The fitted models and what loading them needs: the churn model and its calibrator, the
uplift model and its terms, the compiled forest, reference profiles for drift, and the names
the registry uses. Training writes them; serving and operations read them."""
