"""Uplift training and evaluation: synthetic ground truth, Hillstrom end to end, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from features.synthetic import GenerateConfig, generate
from models.uplift_model import Effect, UpliftModel
from models.uplift_terms import predict_terms
from tests.conftest import migrated_store, process_env, shared_file
from training.config import BaseParams, ExperimentError, UpliftTrainConfig
from training.promote import PromotionError, promote
from training.train_uplift import (
    _categories,
    check_experiment,
    evaluate_uplift,
    evaluation_metrics,
    load_experiment,
    train_uplift,
)
from training.uplift_learners import (
    LEARNERS,
    DistilledEnsembleLearner,
    EnsembleLearner,
    cross_fitted_gain,
    inner_folds,
    make_learner,
    r_loss_weights,
)
from training.uplift_metrics import uplift_at
from training.uplift_tracking import log_uplift_run

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def campaign_base(tmp_path_factory) -> Path:
    """20,000 synthetic customers, about 12,500 of them in the randomised campaign."""
    folder = tmp_path_factory.mktemp("uplift-base")
    generate(GenerateConfig(customers=20_000, seed=11), folder)
    return folder


# Smaller, slower-learning trees than LightGBM's defaults: the synthetic campaign's effect
# rides on a few of 62 features, and 12,500 customers are too few for 31-leaf trees not to
# fit noise (bench/RESULTS.md).
SMOOTH = BaseParams(learning_rate=0.03, num_leaves=7, min_data_in_leaf=200, rounds=150,
                    lambda_l2=10.0)


def hillstrom_config(outcome: str, **options) -> UpliftTrainConfig:
    other = "conversion" if outcome == "spend" else "spend"
    return UpliftTrainConfig(
        table=shared_file("hillstrom/hillstrom.csv"),
        treatments=("segment=Womens E-Mail", "segment=Mens E-Mail"),
        control="segment=No E-Mail", outcome=outcome, ignore=("visit", other), **options)


def test_learned_uplift_ranks_customers_by_their_true_effect(campaign_base):
    cfg = UpliftTrainConfig(data=campaign_base, learner="ensemble", params=SMOOTH)
    result = train_uplift(cfg)
    experiment = result.experiment
    truth = pd.read_parquet(campaign_base / "ground_truth.parquet").set_index("customer_id")
    truth = truth.loc[experiment.ids]
    true_effect = truth["true_uplift_spend"].to_numpy()
    arm = experiment.arms[0]
    predicted = result.model.predict(experiment.features)
    assert spearmanr(predicted[f"uplift_{arm}"], true_effect).statistic >= 0.45
    # Held out too: each customer ranked by a model that never saw them.
    held_out = result.arms[arm].selection.scores
    assert spearmanr(held_out, true_effect).statistic >= 0.42
    # Its parts follow the true effects on buying and on spend among buyers.
    assert spearmanr(predicted[f"uplift_conversion_{arm}"],
                     truth["true_uplift_conversion"]).statistic >= 0.45
    assert spearmanr(predicted[f"uplift_order_value_{arm}"],
                     truth["true_uplift_order_value"]).statistic >= 0.2
    # Targeting beats random: the top 30% by predicted uplift gain more than everyone.
    y, t = experiment.outcome(), experiment.treated()
    assert uplift_at(y, t, held_out, 0.3) > 1.5 * (y[t == 1].mean() - y[t == 0].mean())
    # The average effect is the campaign's true one within three standard errors.
    effect, se = result.arms[arm].effects["spend"]
    assert abs(effect - np.nanmean(true_effect)) < 3 * se


def test_contract_experiment_is_point_in_time_and_counts_the_outcome_window(campaign_base):
    experiment = load_experiment(UpliftTrainConfig(data=campaign_base, horizon_days=30))
    exposures = pd.read_parquet(campaign_base / "exposures.parquet").set_index("customer_id")
    tx = pd.read_parquet(campaign_base / "transactions.parquet")
    some = experiment.ids[:50]
    for i, customer in enumerate(some):
        start = exposures.loc[customer, "exposed_at"]
        mine = tx[tx["customer_id"] == customer]
        window = mine[(mine["ordered_at"] >= start)
                      & (mine["ordered_at"] < start + pd.Timedelta(days=30))]
        assert experiment.outcomes["spend"].iloc[i] == pytest.approx(window["amount"].sum())
        before = mine[mine["ordered_at"] < start.normalize()]
        assert experiment.features["orders_total"].iloc[i] == before.loc[
            before["amount"] >= 0, "order_id"].nunique()
    treated = exposures.loc[experiment.ids, "treatment"].to_numpy()
    assert (experiment.treated() == treated).all()


def test_every_learner_fits_and_predicts_on_a_multi_arm_table():
    experiment = load_experiment(hillstrom_config("conversion"))
    assert experiment.arms == ["Mens E-Mail", "Womens E-Mail"]
    part = experiment.arm("Womens E-Mail").features.head(4000)
    sample = experiment.arm("Womens E-Mail")
    y, t = sample.outcome()[:4000], sample.treated()[:4000]
    for name in LEARNERS:
        predicted = make_learner(name).fit(part, y, t).predict(part)
        assert predicted.shape == (4000,) and np.isfinite(predicted).all(), name


@pytest.mark.parametrize("outcome", ["spend", "conversion"])
def test_hillstrom_trains_and_evaluates_both_arms(outcome, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(migrated_store(tmp_path))
    cfg = hillstrom_config(outcome, learner="t_learner", selection_folds=2)
    result = train_uplift(cfg)
    assert set(result.arms) == {"Womens E-Mail", "Mens E-Mail"}
    womens = result.arms["Womens E-Mail"]
    # The published campaign: both e-mails raised spend and conversion.
    assert womens.effects[outcome][0] > 2 * womens.effects[outcome][1] > 0
    assert womens.checks.warnings() == []
    logged = log_uplift_run(cfg, result)
    assert "first champion" in promote("uplift").message()
    run = mlflow.get_run(logged.run_id)
    assert run.data.params["arms"] == "Mens E-Mail,Womens E-Mail"
    assert "womens_e_mail_spend_qini" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(
        logged.run_id, "plots/womens_e_mail")}
    assert "plots/womens_e_mail/qini_spend.png" in artifacts
    loaded = mlflow.pyfunc.load_model("models:/uplift@champion")
    rows = pd.read_csv(cfg.table).head(3)
    parts = ["uplift_conversion_{}", "uplift_order_value_{}"] if outcome == "spend" else []
    assert list(loaded.predict(rows).columns) == [
        name.format(arm) for arm in ("Mens E-Mail", "Womens E-Mail")
        for name in ("uplift_{}", *parts)]

    scores = evaluate_uplift(cfg, folds=2, repeats=1)
    assert len(scores) == sum(len(load_experiment(cfg).arm(a).ids) for a in result.arms)
    metrics = evaluation_metrics(scores)
    womens_qini = metrics.query("arm == 'Womens E-Mail' and outcome == @outcome")["qini"]
    assert womens_qini.iloc[0] > 0  # better than random targeting


def test_cli_trains_and_evaluates_a_flat_table(tmp_path):
    table = tmp_path / "experiment.csv"
    data = pd.read_csv(shared_file("hillstrom/hillstrom.csv"))
    data[data["segment"] != "Mens E-Mail"].sample(12_000, random_state=0).to_csv(table,
                                                                                  index=False)
    common = ["--table", str(table), "--treatment", "segment=Womens E-Mail",
              "--control", "segment=No E-Mail", "--outcome", "spend", "--ignore", "visit",
              "--ignore", "conversion", "--learner", "t_learner"]
    migrated_store(tmp_path)  # the store the command finds: ./mlflow.db
    env = process_env()
    trained = subprocess.run([str(BIN / "churn"), "train", "uplift", *common], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=600, check=False)
    assert trained.returncode == 0, trained.stderr
    assert "Womens E-Mail vs control" in trained.stdout
    assert "registered as uplift v1" in trained.stdout
    out = tmp_path / "oof.parquet"
    evaluated = subprocess.run([str(BIN / "churn"), "evaluate", "uplift", *common, "--folds", "3",
                                "--out", str(out)], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=600, check=False)
    assert evaluated.returncode == 0, evaluated.stderr
    scores = pd.read_parquet(out)
    assert len(scores) == 12_000 - (pd.read_csv(table)["segment"] == "Mens E-Mail").sum()
    assert {"id", "arm", "treated", "spend", "uplift_score", "uplift_estimate"} <= set(scores)
    assert "Qini" in evaluated.stdout
    bad = subprocess.run([str(BIN / "churn"), "train", "uplift", "--table", str(table),
                          "--treatment", "segment", "--control", "segment=No E-Mail"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert bad.returncode == 1
    assert "--treatment takes COLUMN=VALUE" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(("options", "message"), [
    ({"treatments": ("segment=Kids E-Mail",)}, "no row has segment=Kids E-Mail"),
    ({"control": "arm=none"}, "no column arm"),
    ({"outcome": "history_segment"}, "needs a finite number"),
    ({"learner": "s_learner"}, "unknown learner 's_learner'"),
])
def test_flat_table_mistakes_are_named(options, message):
    base = {"table": shared_file("hillstrom/hillstrom.csv"),
            "treatments": ("segment=Womens E-Mail",), "control": "segment=No E-Mail"}
    with pytest.raises(ExperimentError, match=message):
        load_experiment(UpliftTrainConfig(**{**base, **options}))


def test_contract_mistakes_are_named(synthetic_data, tmp_path):
    folder, _ = synthetic_data
    with pytest.raises(ExperimentError, match="campaign 'spring' is not in exposures"):
        load_experiment(UpliftTrainConfig(data=folder, campaign="spring"))
    with pytest.raises(ExperimentError, match="after the data ends"):
        load_experiment(UpliftTrainConfig(data=folder, horizon_days=200))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "transactions.parquet").write_bytes((folder / "transactions.parquet").read_bytes())
    with pytest.raises(ExperimentError, match="needs an exposures table"):
        load_experiment(UpliftTrainConfig(data=bare))


def test_unbalanced_split_and_covariates_are_flagged():
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"spend": rng.gamma(2, 50, 4000), "visits": rng.poisson(3, 4000)})
    fair = rng.random(4000) < 0.5
    assert check_experiment(X, fair, 0.5).warnings() == []
    # Treatment given mostly to big spenders, and to 70% instead of half.
    skewed = rng.random(4000) < np.where(X["spend"] > 100, 0.9, 0.6)
    warnings = check_experiment(X, skewed, 0.5).warnings()
    assert any("sample ratio mismatch" in w for w in warnings)
    assert any("covariate imbalance: spend" in w for w in warnings)


def test_uplift_promotion_compares_nested_out_of_fold_qini(campaign_base, mlflow_store):
    """Both runs on the same experiment: each judged by its own nested out-of-fold scores on
    the same rows; a champion fitted on a variant of the experiment is not judged on it."""
    fast = BaseParams(rounds=40)
    first_cfg = UpliftTrainConfig(data=campaign_base, learner="t_learner", params=fast)
    first = log_uplift_run(first_cfg, train_uplift(first_cfg))
    crowned = promote("uplift")
    assert crowned.promoted and "against random targeting" in crowned.message()
    first_qini = mlflow.get_run(first.run_id).data.metrics["qini"]
    assert crowned.candidate_score == pytest.approx(first_qini)

    second_cfg = UpliftTrainConfig(data=campaign_base, learner="x_learner", params=fast)
    second = log_uplift_run(second_cfg, train_uplift(second_cfg))
    outcome = promote("uplift", run_id=second.run_id)
    # The champion's score is its own nested out-of-fold Qini, not its in-sample fit.
    assert outcome.champion_score == pytest.approx(first_qini)
    assert outcome.candidate_score == pytest.approx(
        mlflow.get_run(second.run_id).data.metrics["qini"])
    assert outcome.promoted == (outcome.candidate_score > first_qini)

    # A shorter outcome window: the same customers with other outcomes, so another digest;
    # whoever is champion was fitted on these customers and cannot score them fairly.
    other_cfg = UpliftTrainConfig(data=campaign_base, learner="t_learner", params=fast,
                                  horizon_days=20)
    other = log_uplift_run(other_cfg, train_uplift(other_cfg))
    with pytest.raises(PromotionError, match=r"shares .* rows with the candidate's"):
        promote("uplift", run_id=other.run_id)


@pytest.mark.parametrize("name", ["two_part", "ensemble", "ensemble_or_distilled",
                                  "adaptive"])
def test_two_part_and_ensemble_models_save_and_load_exactly(name, tmp_path):
    experiment = load_experiment(hillstrom_config("spend"))
    part = experiment.arm("Womens E-Mail")
    X, y, t = part.features.head(6000), part.outcome()[:6000], part.treated()[:6000]
    learner = make_learner(name).fit(X, y, t)
    model = UpliftModel({"Womens E-Mail": Effect(learner.terms_, learner.parts_,
                                                 getattr(learner, "intervals_", {}))},
                        list(X.columns), _categories(X), "spend", {"Womens E-Mail": name})
    loaded = UpliftModel.load(model.save(tmp_path / "model"))
    before, after = model.predict(X.head(500)), loaded.predict(X.head(500))
    assert np.array_equal(before.to_numpy(), after.to_numpy())
    assert before.abs().to_numpy().max() > 0


def test_two_part_learner_splits_spend_into_conversion_and_order_value():
    experiment = load_experiment(hillstrom_config("spend"))
    part = experiment.arm("Mens E-Mail")
    y, t = part.outcome(), part.treated()
    learner = make_learner("two_part").fit(part.features, y, t)
    conversion = predict_terms(learner.parts_["conversion"], part.features)
    observed = (y[t == 1] > 0).mean() - (y[t == 0] > 0).mean()
    # In-sample, the classifiers' mean difference is the observed conversion effect.
    assert conversion.mean() == pytest.approx(observed, abs=0.003)
    assert np.isfinite(predict_terms(learner.parts_["order_value"], part.features)).all()
    spend = learner.predict(part.features)
    assert spend.mean() == pytest.approx(y[t == 1].mean() - y[t == 0].mean(), abs=0.3)


def test_r_loss_weights_recover_the_mix_that_made_the_effect():
    rng = np.random.default_rng(3)
    good, noise = rng.normal(size=20_000), rng.normal(size=20_000)
    treated = (rng.random(20_000) < 0.5).astype(float)
    effect = 0.2 + 0.7 * good  # what the outcome's treated part follows
    residual_t = treated - treated.mean()
    residual_y = residual_t * effect + rng.normal(scale=0.5, size=20_000)
    weights, constant = r_loss_weights([good, noise], residual_y, residual_t)
    assert weights[0] == pytest.approx(0.7, abs=0.03)
    assert weights[1] == pytest.approx(0.0, abs=0.03)  # never negative, near zero here
    assert constant == pytest.approx(0.2, abs=0.03)


@pytest.mark.parametrize("standard_errors", [np.inf, -np.inf])
def test_the_default_distils_only_when_held_out_rows_say_so(standard_errors):
    experiment = load_experiment(hillstrom_config("spend"))
    part = experiment.arm("Womens E-Mail")
    X, y, t = part.features.head(6000), part.outcome()[:6000], part.treated()[:6000]
    learner = DistilledEnsembleLearner()
    learner.standard_errors = standard_errors  # never / always good enough
    learner.fit(X, y, t)
    average = EnsembleLearner().fit(X, y, t).predict(X)
    # The plain average is compared beside the members either way.
    assert np.array_equal(learner.compared()["ensemble"].predict(X), average)
    assert np.isfinite(learner.gain_).all()
    if standard_errors == np.inf:
        assert not learner.distilled_
        assert np.array_equal(learner.predict(X), average)
        assert learner.combination().startswith("equal weights")
    else:
        assert learner.distilled_ and len(learner.terms_) == 1
        # The surrogate follows the average it was fitted to, smoothly.
        assert spearmanr(learner.predict(X), average).statistic > 0.5
        assert np.std(learner.predict(X)) < np.std(average)
    assert learner.parts_ == learner.fitted_["two_part"].parts_


def simulated(effect, n: int = 6000, seed: int = 5) -> tuple[pd.DataFrame, np.ndarray,
                                                            np.ndarray, np.ndarray]:
    """A randomised experiment on five features: a baseline that is hard to model, noise,
    and the effect ``effect(X)``."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"x{i}" for i in range(5)])
    t = rng.integers(0, 2, n)
    tau = effect(X)
    y = 2 * np.sin(X["x2"]) + X["x3"] ** 2 + t * tau + rng.normal(size=n)
    return X, y.to_numpy(), t, np.asarray(tau, dtype=float)


def test_the_default_weights_only_learners_with_held_out_skill_and_shrinks_effects():
    X, y, t, tau = simulated(lambda X: 1.0 + X["x0"])
    learner = make_learner("adaptive").fit(X, y, t)
    for name, (gain, _) in learner.skill_.items():
        assert (learner.weights_[name] > 0) <= (gain > 0), name  # no skill, no weight
    assert "plain average" not in learner.rule_ and 0 < learner.scale_ <= 1
    predicted = learner.predict(X)
    assert spearmanr(predicted, tau).statistic > 0.8
    assert predicted.mean() == pytest.approx(1.0, abs=0.15)  # the average effect
    assert np.ptp(predicted) < np.ptp(make_learner("ensemble").fit(X, y, t).predict(X))
    assert "shrunk by" in learner.combination()


def test_with_no_effect_to_find_the_default_claims_no_ranking_it_cannot_back():
    X, y, t, _ = simulated(lambda X: np.zeros(len(X)))
    learner = make_learner("adaptive").fit(X, y, t)
    predicted = learner.predict(X)
    average = make_learner("ensemble").fit(X, y, t).predict(X)
    # Held-out rows support no spread of effects: they are shrunk far inside the plain
    # average's, toward the average effect.
    assert learner.scale_ < 0.5
    assert np.std(predicted) < 0.5 * np.std(average)
    assert abs(predicted.mean()) < 0.15


def test_each_customer_gets_the_interval_of_customers_ranked_like_them(tmp_path):
    X, y, t, _ = simulated(lambda X: 1.0 + X["x0"])
    learner = make_learner("adaptive").fit(X, y, t)
    model = UpliftModel.load(UpliftModel(
        {"w": Effect(learner.terms_, learner.parts_, learner.intervals_)}, list(X.columns),
        {}, "spend", {"w": "adaptive"}).save(tmp_path / "model"))
    # New customers of the same experiment: each group of them the intervals put together
    # has its true average effect inside its interval, and the groups rise with the effect.
    fresh, _, _, tau = simulated(lambda X: 1.0 + X["x0"], seed=6)
    scores = model.predict(fresh)
    low, high = scores["uplift_low_w"].to_numpy(), scores["uplift_high_w"].to_numpy()
    assert (low < high).all()
    groups = np.unique(low)
    assert len(groups) == 5
    truth = np.array([tau[low == g].mean() for g in groups])
    inside = [g <= true <= high[low == g][0] for g, true in zip(groups, truth, strict=True)]
    assert sum(inside) >= 4, (groups, truth)
    assert np.all(np.diff(truth) > 0)  # the lowest interval holds the customers gaining least


def test_a_member_calibrated_to_no_spread_counts_as_no_skill():
    rng = np.random.default_rng(4)
    treated = rng.integers(0, 2, 4000)
    residual_t = treated - treated.mean()
    residual_y = residual_t * 0.5 + rng.normal(size=4000)
    fold = inner_folds(treated, 0)
    # An estimate the held-out rows give no weight (scale 0) predicts the constant effect.
    assert cross_fitted_gain(np.zeros(4000), fold, residual_y, residual_t) == (0.0, 0.0)


def test_the_parts_add_up_to_the_spend_effect_and_never_contradict_it(tmp_path):
    experiment = load_experiment(hillstrom_config("spend"))
    part = experiment.arm("Womens E-Mail")
    X, y, t = part.features.head(8000), part.outcome()[:8000], part.treated()[:8000]
    learner = make_learner("adaptive").fit(X, y, t)
    model = UpliftModel.load(UpliftModel(
        {"w": Effect(learner.terms_, learner.parts_)}, list(X.columns), _categories(X),
        "spend", {"w": "adaptive"}).save(tmp_path / "model"))
    got = model.learners["w"].predict_all(model.frame(X))
    spend, conversion, order_value = got["spend"], got["conversion"], got["order_value"]
    contradicting = ((spend > 0) & (conversion < 0) & (order_value < 0)) | (
        (spend < 0) & (conversion > 0) & (order_value > 0))
    assert contradicting.sum() == 0
    # The two-part model's own parts: p and v per group.
    raw_conversion = predict_terms(learner.parts_["conversion"], X)
    raw_order_value = predict_terms(learner.parts_["order_value"], X)
    buy_t, value_c = got["buy_if_contacted"], got["order_value_control"]
    p_mean = np.maximum((buy_t + np.clip(buy_t - raw_conversion, 0, 1)) / 2, 0.01)
    v_mean = np.maximum((2 * value_c + raw_order_value) / 2, np.mean(np.abs(value_c)) * 0.01)
    # spend effect = conversion effect x mean buyer spend + mean buying x order-value effect
    buy_c = np.clip(buy_t - raw_conversion, 0, 1)
    inside = ~(np.isclose(conversion, -buy_c) | np.isclose(conversion, 1 - buy_c))
    assert inside.mean() > 0.9  # the rest sit on the probability bound
    assert np.allclose((conversion * v_mean + p_mean * order_value)[inside], spend[inside],
                       atol=1e-6)
    # The parts are shrunk as the effect is: within the two-part model's own spread.
    assert np.ptp(conversion) < 1.5 * np.ptp(raw_conversion)
    # Unreconciled, the two-part model's own parts contradict the effect for some rows.
    raw = ((spend > 0) & (raw_conversion < 0) & (raw_order_value < 0)) | (
        (spend < 0) & (raw_conversion > 0) & (raw_order_value > 0))
    assert raw.sum() > 0


def test_with_no_effect_to_find_the_default_keeps_every_member_in_the_plain_average():
    """Held-out gains of pure noise are no evidence: no member is dropped on them."""
    X, y, t, _ = simulated(lambda X: 0.0 * X["x0"] + 0.5)
    learner = make_learner("adaptive").fit(X, y, t)
    assert not any(gain > 2 * error for gain, error in learner.skill_.values())
    assert "plain average" in learner.rule_
    assert all(weight > 0 for weight in learner.weights_.values()), learner.weights_
    assert learner.predict(X).mean() == pytest.approx(0.5, abs=0.15)
