"""A model zoo built from small synthetic data: the tests' parity table and the benchmark's rows.

Not imported by the conversion code. Training data are rounded to two decimals and sample rows
sit 0.003 off that grid, so no sample value lies within float32 rounding of a tree threshold
(thresholds are training values or midpoints of them, on a 0.005 grid). Real data can sit on a
threshold: that is the float32 pitfall, shown on purpose by `float32_pitfall()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TRAIN, SAMPLE = 200, 100
OFF_GRID = 0.003


@dataclass(frozen=True)
class ZooModel:
    id: str
    format: str  # what `serin convert` must detect
    suffix: str  # how the artifact is saved: .joblib, .json, .txt, .onnx
    build: Callable[[], tuple[Any, pd.DataFrame]]  # fitted model, sample rows

    def materialize(self, directory: Path) -> tuple[Path, Path, Any, pd.DataFrame]:
        """Writes the artifact and sample.csv; returns their paths, the model and the sample."""
        model, sample = self.build()
        directory.mkdir(parents=True, exist_ok=True)
        artifact = directory / f"{self.id}{self.suffix}"
        save(model, artifact)
        sample_path = directory / f"{self.id}.sample.csv"
        sample.to_csv(sample_path, index=False)
        return artifact, sample_path, model, sample


def save(model: Any, path: Path) -> None:
    if path.suffix == ".joblib":
        import joblib

        joblib.dump(model, path)
    elif path.suffix == ".onnx":
        path.write_bytes(model.SerializeToString())
    elif path.suffix in (".json", ".ubj", ".txt"):
        model.save_model(str(path))
    else:
        raise ValueError(f"no saver for {path.suffix}")


def _columns(x: np.ndarray) -> list[str]:
    return [f"f{i}" for i in range(x.shape[1])]


def classification(classes: int = 2, features: int = 4, seed: int = 0) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=TRAIN + SAMPLE, n_features=features, n_informative=3,
                               n_redundant=0, n_classes=classes, n_clusters_per_class=1,
                               random_state=seed)
    x = x.round(2)
    return x[:TRAIN], y[:TRAIN], x[TRAIN:] + OFF_GRID


def regression(features: int = 4, seed: int = 0) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=TRAIN + SAMPLE, n_features=features, noise=5.0,
                           random_state=seed)
    x = x.round(2)
    return x[:TRAIN], y * 10.0, x[TRAIN:] + OFF_GRID  # targets in the thousands: relative error matters


def _fit_clf(make: Callable[[], Any], classes: int = 2) -> Callable[[], tuple[Any, pd.DataFrame]]:
    def build() -> tuple[Any, pd.DataFrame]:
        x, y, s = classification(classes)
        return make().fit(x, y), pd.DataFrame(s, columns=_columns(s))

    return build


def _fit_reg(make: Callable[[], Any]) -> Callable[[], tuple[Any, pd.DataFrame]]:
    def build() -> tuple[Any, pd.DataFrame]:
        x, y, s = regression()
        return make().fit(x, y[:TRAIN]), pd.DataFrame(s, columns=_columns(s))

    return build


def _with_nans() -> tuple[Any, pd.DataFrame]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, s = classification()
    rng = np.random.default_rng(1)
    x, s = x.copy(), s.copy()
    x[rng.random(x.shape) < 0.1] = np.nan
    s[rng.random(s.shape) < 0.1] = np.nan  # NaN in the sample too: the imputer must take them
    pipe = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                         RandomForestClassifier(n_estimators=10, random_state=0, n_jobs=1))
    return pipe.fit(x, y), pd.DataFrame(s, columns=_columns(s))


def mixed_frame(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A DataFrame with string and numeric columns, a class target and a value target."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "color": rng.choice(["red", "green", "blue"], n),
        "size": rng.choice(["S", "M", "L", "XL"], n),
        "age": rng.integers(18, 80, n),
        "income": rng.normal(50.0, 15.0, n).round(2),
    })
    score = frame["income"] / 10 + (frame["color"] == "red") * 2 + frame["age"] / 20
    y_class = (score + rng.normal(0, 1, n) > score.median()).astype(int).to_numpy()
    return frame, y_class, (score * 100).to_numpy()


def _column_transformer(regressor: bool) -> Callable[[], tuple[Any, pd.DataFrame]]:
    def build() -> tuple[Any, pd.DataFrame]:
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import RandomForestRegressor
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline, make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        frame, y_class, y_value = mixed_frame(TRAIN + SAMPLE)
        # Trees take raw numbers: a scaler in front of a forest puts integer features within one
        # float32 ulp of a threshold (DESIGN.md pitfall), so the regressor imputes only.
        numeric = SimpleImputer() if regressor else make_pipeline(SimpleImputer(), StandardScaler())
        prep = ColumnTransformer([
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["color", "size"]),
            ("num", numeric, ["age", "income"]),
        ])
        head: Any = (RandomForestRegressor(n_estimators=10, random_state=0, n_jobs=1)
                     if regressor else LogisticRegression())
        pipe = Pipeline([("prep", prep), ("model", head)])
        pipe.fit(frame.iloc[:TRAIN], (y_value if regressor else y_class)[:TRAIN])
        sample = frame.iloc[TRAIN:].reset_index(drop=True)
        sample["income"] += OFF_GRID
        return pipe, sample

    return build


def _xgb_dataframe() -> tuple[Any, pd.DataFrame]:
    from xgboost import XGBClassifier

    x, y, s = classification()
    names = ["age", "income", "score", "tenure"]  # not f0..: the converter rejects such names
    model = XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1)
    model.fit(pd.DataFrame(x, columns=names), y)
    return model, pd.DataFrame(s, columns=names)


def _xgb_booster() -> tuple[Any, pd.DataFrame]:
    import xgboost as xgb

    x, y, s = classification()
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                        xgb.DMatrix(x, label=y), num_boost_round=10)
    return booster, pd.DataFrame(s, columns=_columns(s))


def _lgbm_booster(objective: str) -> Callable[[], tuple[Any, pd.DataFrame]]:
    def build() -> tuple[Any, pd.DataFrame]:
        import lightgbm as lgb

        x, y, s = classification() if objective == "binary" else regression()
        params = {"objective": objective, "num_leaves": 8, "min_data_in_leaf": 5, "verbose": -1,
                  "num_threads": 1}
        booster = lgb.train(params, lgb.Dataset(x, label=y[:TRAIN]), num_boost_round=10)
        return booster, pd.DataFrame(s, columns=_columns(s))

    return build


def voting(kind: str, trees: int = 10, weights: list[float] | None = None) -> Any:
    """An unfitted VotingClassifier with scikit-learn's default flatten_transform=True, which
    skl2onnx refuses by itself (serin.converters.voting): a linear model, a tree, a forest and
    naive Bayes, as teams combine them."""
    from sklearn.ensemble import RandomForestClassifier, VotingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.tree import DecisionTreeClassifier

    return VotingClassifier([
        ("logistic", LogisticRegression(max_iter=500)),
        ("tree", DecisionTreeClassifier(max_depth=5, random_state=0)),
        ("forest", RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=1)),
        ("bayes", GaussianNB()),
    ], voting=kind, weights=weights)


def _onnx_passthrough() -> tuple[Any, pd.DataFrame]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    x, y, s = classification()
    model = LogisticRegression().fit(x, y)
    onx = convert_sklearn(model, initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
                          target_opset=17, options={id(model): {"zipmap": False}})
    return onx, pd.DataFrame(s, columns=_columns(s))


def float32_pitfall() -> tuple[Any, pd.DataFrame]:
    """A model whose decision boundary lies between float32 neighbours: a float32 graph fails
    parity, the float64 one the converter then tries passes.

    The boundary sits at x = 1e6; float32 spacing there is 0.0625, so rows at 1e6 ± 0.01 are
    distinct for scikit-learn (float64) and identical in float32.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.array([[1e6 - 1.0], [1e6 + 1.0]])
    model = LogisticRegression().fit(x, [0, 1])
    model.coef_ = np.array([[100.0]])
    model.intercept_ = np.array([-1e8])
    sample = np.concatenate([np.linspace(1e6 - 50, 1e6 + 50, 20), [1e6 - 0.01, 1e6 + 0.01]])
    return model, pd.DataFrame({"x": sample})


def float32_pitfall_lightgbm() -> tuple[Any, pd.DataFrame]:
    """A LightGBM model split between float32 neighbours: parity fails and stays failed.

    LightGBM compares float64 values with float64 thresholds; onnxmltools writes the thresholds
    in float32, so no input precision makes the graph exact. The split sits between 1e6 and
    1e6 + 0.01, which are one float32 value.
    """
    import lightgbm

    rng = np.random.default_rng(0)
    x = np.repeat([1e6, 1e6 + 0.01], 100)
    features = np.column_stack([x, rng.normal(size=x.size)])
    model = lightgbm.LGBMClassifier(n_estimators=5, min_child_samples=5, verbose=-1, n_jobs=1)
    model.fit(pd.DataFrame(features, columns=["x", "noise"]), (x > 1e6 + 0.005).astype(int))
    rows = np.concatenate([features[:10], features[-10:]])
    return model, pd.DataFrame(rows, columns=["x", "noise"])


def models() -> list[ZooModel]:
    # Imports inside: the zoo is cheap to list and each builder pays for what it uses.
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.feature_selection import SelectKBest, VarianceThreshold
    from sklearn.linear_model import (
        ElasticNet,
        Lasso,
        LinearRegression,
        LogisticRegression,
        Ridge,
        SGDClassifier,
        SGDRegressor,
    )
    from sklearn.naive_bayes import BernoulliNB, GaussianNB, MultinomialNB
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler
    from sklearn.svm import SVC, SVR, LinearSVC
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    def sk(id_: str, build: Callable[[], tuple[Any, pd.DataFrame]]) -> ZooModel:
        return ZooModel(id_, "sklearn", ".joblib", build)

    def xgb_model(kind: str, classes: int = 2) -> Callable[[], tuple[Any, pd.DataFrame]]:
        def make() -> Any:
            import xgboost

            cls = xgboost.XGBClassifier if kind == "clf" else xgboost.XGBRegressor
            return cls(n_estimators=10, max_depth=3, n_jobs=1)

        return _fit_clf(make, classes) if kind == "clf" else _fit_reg(make)

    def lgbm_model(kind: str, classes: int = 2) -> Callable[[], tuple[Any, pd.DataFrame]]:
        def make() -> Any:
            import lightgbm

            cls = lightgbm.LGBMClassifier if kind == "clf" else lightgbm.LGBMRegressor
            return cls(n_estimators=10, num_leaves=8, min_child_samples=5, verbose=-1, n_jobs=1)

        return _fit_clf(make, classes) if kind == "clf" else _fit_reg(make)

    def pipe_xgb() -> Any:
        import xgboost

        return make_pipeline(StandardScaler(), xgboost.XGBClassifier(n_estimators=10, max_depth=3,
                                                                     n_jobs=1))

    def pipe_lgbm() -> Any:
        import lightgbm

        return make_pipeline(StandardScaler(), lightgbm.LGBMRegressor(
            n_estimators=10, num_leaves=8, min_child_samples=5, verbose=-1, n_jobs=1))

    forest = {"n_estimators": 10, "random_state": 0, "n_jobs": 1}
    return [
        sk("logistic_regression", _fit_clf(LogisticRegression)),
        sk("logistic_regression_multiclass", _fit_clf(LogisticRegression, 3)),
        sk("linear_regression", _fit_reg(LinearRegression)),
        sk("ridge", _fit_reg(Ridge)),
        sk("lasso", _fit_reg(Lasso)),
        sk("elastic_net", _fit_reg(ElasticNet)),
        sk("sgd_classifier", _fit_clf(lambda: SGDClassifier(loss="log_loss", random_state=0))),
        sk("sgd_regressor", _fit_reg(lambda: SGDRegressor(random_state=0))),
        sk("linear_svc", _fit_clf(LinearSVC)),
        sk("svc_probability", _fit_clf(lambda: SVC(probability=True, random_state=0))),
        sk("svr", _fit_reg(lambda: SVR(C=1000.0))),
        sk("decision_tree_classifier", _fit_clf(lambda: DecisionTreeClassifier(max_depth=5))),
        sk("decision_tree_regressor", _fit_reg(lambda: DecisionTreeRegressor(max_depth=5))),
        sk("random_forest_classifier", _fit_clf(lambda: RandomForestClassifier(**forest))),
        sk("random_forest_regressor", _fit_reg(lambda: RandomForestRegressor(**forest))),
        sk("extra_trees_classifier", _fit_clf(lambda: ExtraTreesClassifier(**forest))),
        sk("extra_trees_regressor", _fit_reg(lambda: ExtraTreesRegressor(**forest))),
        sk("gradient_boosting_classifier",
           _fit_clf(lambda: GradientBoostingClassifier(n_estimators=20, random_state=0))),
        sk("gradient_boosting_regressor",
           _fit_reg(lambda: GradientBoostingRegressor(n_estimators=20, random_state=0))),
        sk("hist_gradient_boosting_classifier",
           _fit_clf(lambda: HistGradientBoostingClassifier(max_iter=20, random_state=0))),
        sk("hist_gradient_boosting_regressor",
           _fit_reg(lambda: HistGradientBoostingRegressor(max_iter=20, random_state=0))),
        sk("knn_classifier", _fit_clf(KNeighborsClassifier)),
        sk("knn_regressor", _fit_reg(KNeighborsRegressor)),
        sk("gaussian_nb", _fit_clf(GaussianNB)),
        sk("minmax_multinomial_nb", _fit_clf(lambda: make_pipeline(MinMaxScaler(), MultinomialNB()))),
        sk("bernoulli_nb", _fit_clf(BernoulliNB)),
        sk("mlp_classifier",
           _fit_clf(lambda: MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0))),
        sk("mlp_regressor",
           _fit_reg(lambda: make_pipeline(StandardScaler(), MLPRegressor(
               hidden_layer_sizes=(16,), max_iter=500, learning_rate_init=0.05, random_state=0)))),
        sk("scaler_logistic_regression",
           _fit_clf(lambda: make_pipeline(StandardScaler(), LogisticRegression()))),
        sk("scaler_decision_tree",
           _fit_clf(lambda: make_pipeline(StandardScaler(), DecisionTreeClassifier(max_depth=6)))),
        sk("imputer_scaler_random_forest_nan_sample", _with_nans),
        sk("column_transformer_onehot_classifier", _column_transformer(regressor=False)),
        sk("column_transformer_onehot_regressor", _column_transformer(regressor=True)),
        sk("select_k_best", _fit_clf(lambda: make_pipeline(SelectKBest(k=3), LogisticRegression()))),
        sk("variance_threshold",
           _fit_reg(lambda: make_pipeline(VarianceThreshold(0.1), Ridge()))),
        sk("voting_soft_multiclass", _fit_clf(lambda: voting("soft"), 3)),
        sk("scaler_voting_soft_weights", _fit_clf(lambda: make_pipeline(
            StandardScaler(), voting("soft", weights=[2, 1, 1, 1])))),
        sk("voting_hard_multiclass", _fit_clf(lambda: voting("hard"), 3)),
        sk("pipeline_scaler_xgboost", _fit_clf(pipe_xgb)),
        sk("pipeline_scaler_lightgbm", _fit_reg(pipe_lgbm)),
        ZooModel("xgboost_classifier_binary", "xgboost", ".joblib", xgb_model("clf")),
        ZooModel("xgboost_classifier_multiclass", "xgboost", ".joblib", xgb_model("clf", 3)),
        ZooModel("xgboost_regressor_native_json", "xgboost", ".json", xgb_model("reg")),
        ZooModel("xgboost_classifier_dataframe_names", "xgboost", ".joblib", _xgb_dataframe),
        ZooModel("xgboost_booster_native_ubj", "xgboost", ".ubj", _xgb_booster),
        ZooModel("lightgbm_classifier_binary", "lightgbm", ".joblib", lgbm_model("clf")),
        ZooModel("lightgbm_classifier_multiclass", "lightgbm", ".joblib", lgbm_model("clf", 3)),
        ZooModel("lightgbm_regressor", "lightgbm", ".joblib", lgbm_model("reg")),
        ZooModel("lightgbm_booster_binary_txt", "lightgbm", ".txt", _lgbm_booster("binary")),
        ZooModel("lightgbm_booster_regression_txt", "lightgbm", ".txt",
                 _lgbm_booster("regression")),
        ZooModel("onnx_passthrough", "onnx", ".onnx", _onnx_passthrough),
    ]


def by_id(model_id: str) -> ZooModel:
    return next(m for m in models() if m.id == model_id)


# The realistic tier: the sizes platform teams train (>= 100 trees or iterations, 30 features,
# 2,000 rows), full float64 precision, missing values where the estimator takes them, categorical
# columns one-hot and native, integer features behind scalers, names from DataFrames. Half the
# sample rows are training rows: HistGradientBoosting's thresholds are often training values, so
# these rows sit exactly on them.
REALISTIC_TRAIN, REALISTIC_FEATURES = 2000, 30


def realistic_data(task: str, classes: int = 2, nan: float = 0.0, integers: bool = False,
                   seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """(training frame, target, sample frame) with columns x0..x29."""
    from sklearn.datasets import make_classification, make_regression

    n = REALISTIC_TRAIN + 100
    if task == "classification":
        x, y = make_classification(n_samples=n, n_features=REALISTIC_FEATURES, n_informative=12,
                                   n_redundant=4, n_classes=classes, random_state=seed)
    else:
        x, y = make_regression(n_samples=n, n_features=REALISTIC_FEATURES, n_informative=15,
                               noise=5.0, random_state=seed)
        y = y * 10.0
    if integers:
        x = np.round(x * 3.0)
    if nan:
        x = x.copy()
        x[np.random.default_rng(seed + 1).random(x.shape) < nan] = np.nan
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(REALISTIC_FEATURES)])
    train = frame.iloc[:REALISTIC_TRAIN]
    sample = pd.concat([frame.iloc[:100], frame.iloc[REALISTIC_TRAIN:]], ignore_index=True)
    return train, y[:REALISTIC_TRAIN], sample


def _categorical_frame(task: str) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Two integer-coded categorical columns (codes with gaps, NaN, a code unseen in training in
    the sample) in front of 28 numeric ones; the target depends on both kinds."""
    train, _, sample = realistic_data(task, nan=0.03)
    rng = np.random.default_rng(7)
    out = []
    for frame in (train, sample):
        frame = frame.copy()
        frame["x0"] = rng.integers(0, 12, len(frame)) * 3.0
        frame["x1"] = rng.choice([1.0, 2.0, 5.0, 9.0, np.nan], len(frame))
        out.append(frame)
    train, sample = out
    sample.loc[:4, "x0"] = 99.0  # unknown at training time: goes where missing values go
    signal = ((train["x0"] % 2 == 0).to_numpy() * 2.0 + (train["x1"] == 5).to_numpy() * 3.0
              + np.nan_to_num(train["x2"].to_numpy()))
    y = (signal > np.median(signal)).astype(int) if task == "classification" else signal * 100.0
    return train, y, sample


def _realistic(make: Callable[[], Any], task: str, **data: Any) -> Callable[[], tuple[Any, pd.DataFrame]]:
    def build() -> tuple[Any, pd.DataFrame]:
        train, y, sample = realistic_data(task, **data)
        return make().fit(train, y), sample

    return build


def _realistic_categorical(make: Callable[[], Any], task: str) -> Callable[[], tuple[Any, pd.DataFrame]]:
    def build() -> tuple[Any, pd.DataFrame]:
        train, y, sample = _categorical_frame(task)
        return make().fit(train, y), sample

    return build


def _realistic_counts() -> tuple[Any, pd.DataFrame]:
    """Poisson counts: the regressor's log link must be applied in the graph."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    train, y, sample = realistic_data("regression", nan=0.05)
    counts = np.random.default_rng(5).poisson(np.exp(y / (2 * y.std())))
    return HistGradientBoostingRegressor(loss="poisson", max_iter=100).fit(train, counts), sample


def _realistic_lightgbm_booster() -> tuple[Any, pd.DataFrame]:
    import lightgbm

    train, y, sample = realistic_data("classification", nan=0.05)
    params = {"objective": "binary", "num_leaves": 31, "verbose": -1, "num_threads": 1}
    return lightgbm.train(params, lightgbm.Dataset(train, label=y), num_boost_round=300), sample


def _realistic_lightgbm_categorical() -> tuple[Any, pd.DataFrame]:
    import lightgbm

    train, y, sample = _categorical_frame("classification")
    model = lightgbm.LGBMClassifier(n_estimators=100, num_leaves=31, verbose=-1, n_jobs=1)
    model.fit(train, y, categorical_feature=["x0", "x1"])
    return model, sample


def _realistic_onehot(task: str) -> Callable[[], tuple[Any, pd.DataFrame]]:
    """Three string columns one-hot encoded and 27 numeric ones imputed, in one ColumnTransformer,
    in front of a 100-iteration HistGradientBoosting."""
    def build() -> tuple[Any, pd.DataFrame]:
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder

        train, y, sample = realistic_data(task, nan=0.05)
        rng = np.random.default_rng(3)
        strings = {"region": ["north", "south", "east", "west"], "plan": ["free", "pro", "team"],
                   "device": ["ios", "android", "web"]}
        frames = []
        for frame in (train, sample):
            frame = frame.drop(columns=["x0", "x1", "x2"]).copy()
            for column, values in strings.items():
                frame[column] = rng.choice(values, len(frame))
            frames.append(frame)
        train, sample = frames
        numeric = [c for c in train.columns if c not in strings]
        prep = ColumnTransformer([
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(strings)),
            ("numeric", SimpleImputer(strategy="median"), numeric),
        ])
        head: Any = (HistGradientBoostingClassifier(max_iter=100) if task == "classification"
                     else HistGradientBoostingRegressor(max_iter=100))
        y = y + (train["region"] == "north").to_numpy() * (1 if task == "classification" else 500)
        if task == "classification":
            y = (y > 0.5).astype(int)
        return Pipeline([("prep", prep), ("model", head)]).fit(train, y), sample

    return build


def realistic() -> list[ZooModel]:
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.feature_selection import SelectKBest, VarianceThreshold
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import (
        ElasticNet,
        Lasso,
        LinearRegression,
        LogisticRegression,
        Ridge,
        SGDClassifier,
        SGDRegressor,
    )
    from sklearn.naive_bayes import BernoulliNB, GaussianNB, MultinomialNB
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler
    from sklearn.svm import SVC, SVR, LinearSVC
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    clf, reg = "classification", "regression"

    def scaled(make: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: make_pipeline(StandardScaler(), make())

    def sk(id_: str, build: Callable[[], tuple[Any, pd.DataFrame]]) -> ZooModel:
        return ZooModel(id_, "sklearn", ".joblib", build)

    def boosters(kind: str, library: str) -> Callable[[], Any]:
        def make() -> Any:
            if library == "xgboost":
                import xgboost

                cls = xgboost.XGBClassifier if kind == clf else xgboost.XGBRegressor
                return cls(n_estimators=300, max_depth=6, n_jobs=1)
            import lightgbm

            cls = lightgbm.LGBMClassifier if kind == clf else lightgbm.LGBMRegressor
            return cls(n_estimators=300, num_leaves=31, verbose=-1, n_jobs=1)

        return make

    return [
        sk("realistic_hgb_classifier_nan",
           _realistic(lambda: HistGradientBoostingClassifier(max_iter=100), clf, nan=0.05)),
        sk("realistic_hgb_classifier_multiclass",
           _realistic(lambda: HistGradientBoostingClassifier(max_iter=100), clf, classes=3)),
        sk("realistic_hgb_regressor_nan",
           _realistic(lambda: HistGradientBoostingRegressor(max_iter=200), reg, nan=0.05)),
        sk("realistic_hgb_regressor_poisson", _realistic_counts),
        sk("realistic_hgb_classifier_native_categorical", _realistic_categorical(
            lambda: HistGradientBoostingClassifier(max_iter=100, categorical_features=["x0", "x1"]),
            clf)),
        sk("realistic_hgb_regressor_native_categorical", _realistic_categorical(
            lambda: HistGradientBoostingRegressor(max_iter=100, categorical_features=["x0", "x1"]),
            reg)),
        sk("realistic_onehot_columns_hgb_classifier", _realistic_onehot(clf)),
        sk("realistic_onehot_columns_hgb_regressor", _realistic_onehot(reg)),
        sk("realistic_scaler_random_forest_integers", _realistic(
            lambda: make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=100, n_jobs=1)), clf,
            integers=True)),
        sk("realistic_imputer_scaler_gradient_boosting_nan", _realistic(
            lambda: make_pipeline(SimpleImputer(), StandardScaler(),
                                  GradientBoostingClassifier(n_estimators=100)), clf, nan=0.05)),
        sk("realistic_random_forest_regressor_deep",
           _realistic(lambda: RandomForestRegressor(n_estimators=100, n_jobs=1), reg)),
        sk("realistic_extra_trees_classifier",
           _realistic(lambda: ExtraTreesClassifier(n_estimators=100, n_jobs=1), clf)),
        sk("realistic_gradient_boosting_regressor",
           _realistic(lambda: GradientBoostingRegressor(n_estimators=100, max_depth=5), reg)),
        sk("realistic_decision_tree_regressor_deep",
           _realistic(lambda: DecisionTreeRegressor(), reg)),
        sk("realistic_scaler_mlp_classifier", _realistic(lambda: make_pipeline(
            StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=300, random_state=0)), clf)),
        sk("realistic_scaler_mlp_regressor", _realistic(lambda: make_pipeline(
            StandardScaler(), MLPRegressor(hidden_layer_sizes=(64, 32), max_iter=300, random_state=0)), reg)),
        sk("realistic_imputer_scaler_logistic_nan", _realistic(lambda: make_pipeline(
            SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=500)), clf, nan=0.05)),
        sk("realistic_scaler_knn_classifier",
           _realistic(lambda: make_pipeline(StandardScaler(), KNeighborsClassifier()), clf)),
        sk("realistic_scaler_svc_probability", _realistic(lambda: make_pipeline(
            StandardScaler(), SVC(probability=True, random_state=0)), clf)),
        sk("realistic_decision_tree_classifier", _realistic(DecisionTreeClassifier, clf)),
        sk("realistic_extra_trees_regressor",
           _realistic(lambda: ExtraTreesRegressor(n_estimators=100, n_jobs=1), reg)),
        sk("realistic_linear_regression", _realistic(LinearRegression, reg)),
        sk("realistic_ridge", _realistic(Ridge, reg)),
        sk("realistic_lasso", _realistic(Lasso, reg)),
        sk("realistic_elastic_net", _realistic(ElasticNet, reg)),
        sk("realistic_scaler_sgd_classifier",
           _realistic(scaled(lambda: SGDClassifier(loss="log_loss", random_state=0)), clf)),
        sk("realistic_scaler_sgd_regressor",
           _realistic(scaled(lambda: SGDRegressor(random_state=0)), reg)),
        sk("realistic_linear_svc", _realistic(LinearSVC, clf)),
        sk("realistic_scaler_svr", _realistic(scaled(lambda: SVR(C=1000.0)), reg)),
        sk("realistic_scaler_knn_regressor", _realistic(scaled(KNeighborsRegressor), reg)),
        sk("realistic_gaussian_nb", _realistic(GaussianNB, clf)),
        sk("realistic_minmax_multinomial_nb",
           _realistic(lambda: make_pipeline(MinMaxScaler(), MultinomialNB()), clf)),
        sk("realistic_bernoulli_nb", _realistic(BernoulliNB, clf)),
        sk("realistic_voting_soft", _realistic(lambda: voting("soft", trees=100), clf)),
        sk("realistic_select_k_best_logistic",
           _realistic(lambda: make_pipeline(SelectKBest(k=10), LogisticRegression(max_iter=500)),
                      clf)),
        sk("realistic_variance_threshold_ridge",
           _realistic(lambda: make_pipeline(VarianceThreshold(0.1), Ridge()), reg)),
        ZooModel("realistic_xgboost_classifier_nan", "xgboost", ".joblib",
                 _realistic(boosters(clf, "xgboost"), clf, nan=0.05)),
        ZooModel("realistic_xgboost_regressor_nan", "xgboost", ".joblib",
                 _realistic(boosters(reg, "xgboost"), reg, nan=0.05)),
        ZooModel("realistic_lightgbm_classifier_nan", "lightgbm", ".joblib",
                 _realistic(boosters(clf, "lightgbm"), clf, nan=0.05)),
        ZooModel("realistic_lightgbm_regressor_nan", "lightgbm", ".joblib",
                 _realistic(boosters(reg, "lightgbm"), reg, nan=0.05)),
        ZooModel("realistic_lightgbm_native_categorical", "lightgbm", ".joblib",
                 _realistic_lightgbm_categorical),
        ZooModel("realistic_lightgbm_booster_binary_nan_txt", "lightgbm", ".txt",
                 _realistic_lightgbm_booster),
    ]


def by_id_realistic(model_id: str) -> ZooModel:
    return next(m for m in realistic() if m.id == model_id)
