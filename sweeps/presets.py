"""Named sweeps (long: plain data, one entry per preset, no logic but `get_preset`).

Resolved by `sweeps.validation.build_spec`; each field is overridable by `--set`.

- ``quickstart``: a real sweep on this laptop-class CPU in minutes (digits, small CNN, one-hot /
  uniform / class-similarity labels with pixel L1/L2 distances, in-process trials).
- ``cifar10-calibration``, ``cifar100-calibration``: paper A Table 1 (α = 0.1, β in [0.5, 6], sources
  L1 L2 AE WE, baselines one-hot / uniform LS / mixup; TS, ETS and Dir-ODIR are post-hoc rows computed
  from each one-hot trial's recalibrated `ts_`/`ets_`/`dir_` metrics).
- ``tinyimagenet-calibration``: paper A Table 2 (AE latent 1024; WE needs the user's vector file).
- ``cifar10-noisy``: paper B Tables 1-3 (noise kind and rate, trusted-set size M, CE on one-hot labels
  vs pCE / projection / log-projection on confidence pair labels with L2 relaxation).

Paper A trains DenseNet-161 on CIFAR-100; its CIFAR-sized stand-in here is DenseNet-BC-100 (k = 12),
the architecture key the model registry provides. WRN with {16, 16, 32, 64} filters is WRN-28-1.
"""

from __future__ import annotations

import copy
from typing import Any

from simlab._validate import did_you_mean
from sweeps.spec import SpecError

DATA = "../shared/data"  # the project's read-only shared data, relative to the repo root

# Paper A §6.1: WRN {16, 16, 32, 64} filters = widen factor 1; DenseNet-BC as the CIFAR DenseNet.
_CIFAR_MODEL_ARGS = {
    "wrn": {"depth": 28, "widen_factor": 1},
    "densenet_bc": {"depth": 100, "growth_rate": 12},
}
# Paper A §5.4 / Table 1: the four distance sources, α = 0.1, β in [0.5, 6].
_PAPER_A_SPACE = {
    "label": {"choice": ["onehot", "uniform", "mixup", "similarity"]},
    "similarity": {"choice": ["l1", "l2", "ae", "we"]},
    "beta": {"uniform": [0.5, 6.0]},
}
# CIFAR-10's sources: the shared word vectors (`car`, not `automobile`), AE latent 256 (paper A §6.1).
_CIFAR10_SOURCE_ARGS = {
    "we": {"vectors": f"{DATA}/vectors/cifar10-words-300d.txt", "mapping": {"automobile": "car"}},
    "ae": {"latent_dim": 256},
}
_PAPER_A_WARM = [
    {"label": "onehot"},
    {"label": "uniform"},
    {"label": "mixup"},
    {"label": "similarity", "similarity": "l1"},
    {"label": "similarity", "similarity": "l2"},
    {"label": "similarity", "similarity": "ae"},
    {"label": "similarity", "similarity": "we"},
]

# How every paper preset runs: TorchTrainer trials on one GPU each, ASHA, retries on both layers.
_PAPER_RUN: dict[str, Any] = {
    "scheduler": "asha",
    "grace_period": 20,
    "in_process": False,
    # TorchTrainer trial drivers take almost no resources: without a cap Tune would start (and Optuna
    # sample) every trial at once. 8 = cluster.yaml's GPU workers at one GPU per trial.
    "max_concurrent": 8,
    "gpus_per_trial": 1.0,
    "cpus_per_trial": 4.0,
    "train_max_failures": 2,
    "tune_max_failures": 2,
}

PRESETS: dict[str, dict[str, Any]] = {
    "quickstart": {
        "description": "digits + small CNN on CPU: one-hot vs uniform vs class-similarity LS (pixel L1/L2)",
        "fixed": {
            "dataset": "digits",
            "model": "small_cnn",
            "epochs": 4,  # ~92 % test accuracy for one-hot labels
            "batch_size": 64,
            "weight_decay": 5e-4,
            "scheduler": "cosine",
            "augment": False,  # 8x8 digits: crops/flips would change the classes
            "device": "cpu",
            "amp": False,
            "channels_last": False,
            "val_fraction": 0.2,
            "seed": 0,
            # Post-hoc TS/ETS/Dir-ODIR on the validation logits: SPEC §6 logs their ts_/ets_/dir_
            # metrics. Dir-ODIR's cross-validation costs ~2-4 s a trial here (--set recalibrate=false).
            "recalibrate": True,
        },
        "space": {
            "label": {"choice": ["onehot", "uniform", "similarity"]},
            "similarity": {"choice": ["l1", "l2"]},
            "alpha": {"uniform": [0.02, 0.2]},
            "beta": {"uniform": [0.5, 6.0]},
            # Searched for every label, so a label without its own parameters (one-hot) is not
            # sampled twice with the same configuration.
            "lr": {"loguniform": [0.05, 0.2]},
        },
        "warm_start": [
            {"label": "onehot"},
            {"label": "uniform"},
            {"label": "similarity", "similarity": "l2"},
            {"label": "similarity", "similarity": "l1"},
        ],
        "num_samples": 12,
        "objective": "val_nll:min",
        "scheduler": "none",
        "in_process": True,
        "cpus_per_trial": 1.0,
        "gpus_per_trial": 0.0,
        "tune_max_failures": 1,
    },
    "cifar10-calibration": {
        "description": "paper A Table 1 protocol on CIFAR-10 (JPEG release in ../shared/data)",
        "fixed": {
            "dataset": "cifar10",
            "data_dir": f"{DATA}/cifar10-jpeg.zip",
            "alpha": 0.1,
            "epochs": 200,
            "batch_size": 128,
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "scheduler": "cosine",
            "augment": True,
        },
        "space": {"model": {"choice": ["resnet18", "wrn", "densenet_bc"]}, **copy.deepcopy(_PAPER_A_SPACE)},
        "model_args": copy.deepcopy(_CIFAR_MODEL_ARGS),
        "source_args": copy.deepcopy(_CIFAR10_SOURCE_ARGS),
        "warm_start": copy.deepcopy(_PAPER_A_WARM),
        "num_samples": 60,
        "objective": "val_nll:min",
        **_PAPER_RUN,
    },
    "cifar100-calibration": {
        "description": "paper A Table 1 (CIFAR-100); --set data_dir=<CIFAR-100 folder/zip>",
        "fixed": {
            "dataset": "cifar100",
            "alpha": 0.1,
            "epochs": 200,
            "batch_size": 128,
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "scheduler": "cosine",
            "augment": True,
        },
        "space": {"model": {"choice": ["resnet18", "wrn", "densenet_bc"]}, **copy.deepcopy(_PAPER_A_SPACE)},
        "model_args": copy.deepcopy(_CIFAR_MODEL_ARGS),
        "source_args": {
            "we": {"vectors": f"{DATA}/vectors/cifar100-glove-100d.txt"},
            "ae": {"latent_dim": 256},  # paper A §6.1
        },
        "warm_start": copy.deepcopy(_PAPER_A_WARM),
        "num_samples": 60,
        "objective": "val_nll:min",
        **_PAPER_RUN,
    },
    "tinyimagenet-calibration": {
        "description": (
            "paper A Table 2 (Tiny-ImageNet; --set data_dir=...; add WE with "
            "--set similarity=l1,l2,ae,we --set source_args.we.vectors=<word2vec file>)"
        ),
        "fixed": {
            "dataset": "tinyimagenet",
            "alpha": 0.1,
            "epochs": 200,
            "batch_size": 128,
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "scheduler": "cosine",
            "augment": True,
        },
        "space": {
            # Paper A Table 2: DenseNet-161, ResNet-34, WRN-50-2 (here the registry's CIFAR-style nets).
            "model": {"choice": ["resnet34", "wrn", "densenet_bc"]},
            "label": {"choice": ["onehot", "uniform", "mixup", "similarity"]},
            "similarity": {"choice": ["l1", "l2", "ae"]},
            "beta": {"uniform": [0.5, 6.0]},
        },
        "model_args": {
            "wrn": {"depth": 28, "widen_factor": 2},
            "densenet_bc": {"depth": 100, "growth_rate": 12},
        },
        "source_args": {"ae": {"latent_dim": 1024}},  # paper A §6.1
        "warm_start": [w for w in copy.deepcopy(_PAPER_A_WARM) if w.get("similarity") != "we"],
        "num_samples": 60,
        "objective": "val_nll:min",
        **_PAPER_RUN,
    },
    "cifar10-noisy": {
        "description": "paper B Tables 1-3: CE on one-hot vs projective losses on confidence pair labels",
        "fixed": {
            "dataset": "cifar10",
            "data_dir": f"{DATA}/cifar10-jpeg.zip",
            "model": "resnet34",
            "confidence_source": "pairs",
            "relaxation": "l2",  # paper B eq. 9 on noisy samples, eq. 10 (none) on the trusted set
            "confidence_own": 0.6,  # paper B §4.1
            "confidence_other": 0.4,
            "trusted_own": 0.95,
            "trusted_other": 0.05,
            "epochs": 200,
            "batch_size": 256,  # paper B §4.1.1
            "lr": 0.2,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "scheduler": "plateau",
            "plateau_factor": 0.5,
            "plateau_patience": 5,
            "augment": True,
        },
        "space": {
            "label": {"choice": ["onehot", "confidence"]},
            "loss": {"choice": ["ce", "projection", "log_projection", "l1", "mse"]},
            "noise_kind": {"choice": ["asymmetric", "symmetric"]},
            "noise_rate": {"choice": [0.0, 0.2, 0.4, 0.8]},
            "trusted_size": {"choice": [100, 1000, 10000]},  # paper B: M = 0.1k, 1k, 10k
        },
        # CE on one-hot labels is the baseline with no trusted set (paper B Table 1, "M = -").
        "only_for": {"loss": ["confidence"], "trusted_size": ["confidence"]},
        "warm_start": [
            {"label": "onehot", "noise_kind": "asymmetric", "noise_rate": 0.4},
            {
                "label": "confidence",
                "loss": "log_projection",
                "noise_kind": "asymmetric",
                "noise_rate": 0.4,
                "trusted_size": 1000,
            },
        ],
        "num_samples": 48,
        "objective": "val_accuracy:max",  # paper B reports accuracy
        **_PAPER_RUN,
    },
}


# ---------------------------------------------------------------------------------------------
# Scaled-down reproductions for a 2-core CPU machine (RESULTS.md): the papers' CIFAR-10 protocols on a
# class-balanced subset, every configuration repeated over 3 seeds. What is scaled (network, epochs,
# data, schedule, trusted-set size) is listed in RESULTS.md.
# The network is CIFAR ResNet-20 (He et al. 2016, 0.27M parameters), the smallest member of the papers'
# ResNet family, trained with precision "auto" (bf16 autocast + channels_last where this CPU runs it
# faster, see simlab.precision). It costs ~41M multiply-adds per image, ~8x the small CNN of the first
# RESULTS.md runs; bf16 gets back 2-3x of that on an AVX-512 BF16 / AMX CPU, so a trial takes ~3-4x as
# long (on one busy core of an AMD EPYC: ~100 img/s, ~13 min for 15 epochs of 5,000 images; the
# 27-trial paper B grid ~2.5 h at two trials at a time). `--set model=small_cnn --set precision=fp32`
# restores the first RESULTS.md setting (small_cnn width 16, ~350 img/s per core).
_REPRO_SEEDS = (0, 1, 2)
_REPRO_FIXED: dict[str, Any] = {
    "dataset": "cifar10",
    "data_dir": f"{DATA}/cifar10-jpeg.zip",
    "model": "resnet20",
    "subset_per_class": 500,  # 5,000 training images (paper: 45-50k)
    "val_fraction": 0.04,  # 2,000 validation images held out of the 50k training split
    "epochs": 15,  # paper: 200
    "eval_every": 15,  # evaluate once, at the end (a full evaluation costs ~1/5 of an epoch here)
    "batch_size": 128,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "scheduler": "cosine",
    "augment": True,
    "device": "cpu",
    "precision": "auto",  # bf16 + channels_last where the CPU is faster with it, else fp32
}
_REPRO_RUN: dict[str, Any] = {
    "model_args": {"small_cnn": {"width": 16}},  # with --set model=small_cnn (the first RESULTS.md runs)
    "scheduler": "none",  # every configuration runs to the end (no ASHA)
    "in_process": True,  # CPU: Train V2 start-up would cost more than a trial
    "cpus_per_trial": 1.0,
    "gpus_per_trial": 0.0,
    "tune_max_failures": 1,
}
# Paper B §4.1: hand-made pairs; the asymmetric-noise settings of Tables 1-2 plus symmetric 0.4 (Table 3).
_REPRO_B_SETTINGS = (("asymmetric", 0.4), ("asymmetric", 0.8), ("symmetric", 0.4))
_REPRO_B_METHODS = (
    {"label": "onehot"},  # CE on one-hot labels, no trusted set (paper B "CE-RN34, M = -")
    {"label": "confidence", "loss": "log_projection"},
    {"label": "confidence", "loss": "projection"},
)
# Paper A's baselines, each over the seeds (the similarity rows come from the β search, see RESULTS.md).
_REPRO_A_BASELINES = ({"label": "onehot"}, {"label": "uniform"}, {"label": "mixup"})
_REPRO_A_SOURCES = ("l1", "l2", "ae", "we")  # paper A §5

PRESETS.update(
    {
        "repro-b-cifar10": {
            "description": (
                "paper B Tables 1-3 scaled to CPU (ResNet-20, precision auto): CE one-hot vs LP / P on "
                "confidence pair labels"
            ),
            "fixed": {
                **copy.deepcopy(_REPRO_FIXED),
                "confidence_source": "pairs",
                "relaxation": "l2",  # paper B eq. 9 on noisy samples, eq. 10 (none) on the trusted set
                "confidence_own": 0.6,
                "confidence_other": 0.4,
                "trusted_own": 0.95,
                "trusted_other": 0.05,
                # paper B's M = 1k is 2 % of its 50k training images; 2 % of 5,000 is 100 (10 per class)
                "trusted_size": 100,
                "recalibrate": False,  # paper B reports accuracy only
            },
            "space": {
                "label": {"choice": ["onehot", "confidence"]},
                "loss": {"choice": ["log_projection", "projection"]},
                "noise_kind": {"choice": ["asymmetric", "symmetric"]},
                "noise_rate": {"choice": [0.4, 0.8]},
                "seed": {"choice": list(_REPRO_SEEDS)},
            },
            "only_for": {"loss": ["confidence"], "trusted_size": ["confidence"]},
            # The whole grid, evaluated first; num_samples = its size, so Optuna samples nothing else.
            "warm_start": [
                {**method, "noise_kind": kind, "noise_rate": rate, "seed": seed}
                for kind, rate in _REPRO_B_SETTINGS
                for method in _REPRO_B_METHODS
                for seed in _REPRO_SEEDS
            ],
            "num_samples": len(_REPRO_B_SETTINGS) * len(_REPRO_B_METHODS) * len(_REPRO_SEEDS),
            "objective": "val_accuracy:max",
            **copy.deepcopy(_REPRO_RUN),
        },
        "repro-a-cifar10-beta": {
            "description": (
                "paper A scaled to CPU (ResNet-20, precision auto), step 1: Optuna searches beta per source "
                "(seed 0)"
            ),
            "fixed": {**copy.deepcopy(_REPRO_FIXED), "label": "similarity", "alpha": 0.1, "seed": 0},
            "space": {
                "similarity": {"choice": list(_REPRO_A_SOURCES)},
                "beta": {"uniform": [0.5, 6.0]},  # paper A §6.2
            },
            "source_args": copy.deepcopy(_CIFAR10_SOURCE_ARGS),
            "warm_start": [{"similarity": s} for s in _REPRO_A_SOURCES],
            "num_samples": 12,  # ~3 per source: TPE's random start-up, then 2 model-guided trials
            "objective": "val_nll:min",
            **copy.deepcopy(_REPRO_RUN),
        },
        "repro-a-cifar10": {
            "description": (
                "paper A scaled to CPU (ResNet-20, precision auto), step 2: one-hot / uniform / mixup "
                "(+ post-hoc TS, ETS, Dir-ODIR) and similarity labels at the searched beta (--warm-start), "
                "3 seeds each"
            ),
            "fixed": {**copy.deepcopy(_REPRO_FIXED), "alpha": 0.1, "ood_samples": 2000},
            "space": {
                "label": {"choice": ["onehot", "uniform", "mixup", "similarity"]},
                "similarity": {"choice": list(_REPRO_A_SOURCES)},
                "beta": {"uniform": [0.5, 6.0]},
                "seed": {"choice": list(_REPRO_SEEDS)},
            },
            "source_args": copy.deepcopy(_CIFAR10_SOURCE_ARGS),
            "warm_start": [{**m, "seed": seed} for m in _REPRO_A_BASELINES for seed in _REPRO_SEEDS],
            # + each source x the seeds from `scripts/report.py --emit-warm-start` (RESULTS.md)
            "num_samples": (len(_REPRO_A_BASELINES) + len(_REPRO_A_SOURCES)) * len(_REPRO_SEEDS),
            "objective": "val_nll:min",
            **copy.deepcopy(_REPRO_RUN),
        },
    }
)


# ---------------------------------------------------------------------------------------------
# Paper tables (issue 12): every table cell on 3 seeds, no ASHA (paper B Fig. 2: LP recovers late, so
# early stopping would judge it too soon). Grids (`search: grid`), not Optuna: each cell is run, once
# per seed. Paper A's tables search β on validation first (stage "search", seed 0), then re-run each
# method's chosen β per network on 3 seeds (stage "seeds", `seeds: 3`); the report reads stage "seeds".
_TABLE_SEEDS = (0, 1, 2)  # paper B §4.1.1: "mean and standard deviation ... from 3 independent runs"
_TABLE_RUN: dict[str, Any] = {**_PAPER_RUN, "scheduler": "none"}
_PAPER_B_FIXED: dict[str, Any] = {
    "dataset": "cifar10",
    "data_dir": f"{DATA}/cifar10-jpeg.zip",
    "model": "resnet34",
    "epochs": 200,  # paper B §4.1.1
    "batch_size": 256,
    "lr": 0.2,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "scheduler": "plateau",  # ReduceLROnPlateau(0.5, patience 5) on validation accuracy
    "plateau_factor": 0.5,
    "plateau_patience": 5,
    "augment": True,  # random crop + flip (paper B: RandomResizedCrop + flip)
    "recalibrate": False,  # paper B reports accuracy only
    "test_accuracy_every": 1,  # paper B picks the epoch with the best test accuracy: log every epoch
}
_PAPER_B_CONFIDENCE = {
    "confidence_source": "pairs",
    "relaxation": "l2",  # paper B eq. 9 on noisy samples, eq. 10 (none) on the trusted set
    "confidence_own": 0.6,  # paper B §4.1
    "confidence_other": 0.4,
    "trusted_own": 0.95,
    "trusted_other": 0.05,
}
# Noise settings of paper B Tables 1-3: ratio 0 (clean: one column shared by the tables, run once, as
# asymmetric noise at rate 0), asymmetric (Tables 1, 2) and symmetric (Table 3) at 0.2, 0.4, 0.8.
_PAPER_B_SETTINGS = (
    ("asymmetric", 0.0),
    *((kind, rate) for kind in ("asymmetric", "symmetric") for rate in (0.2, 0.4, 0.8)),
)
_PAPER_B_SIZES = (100, 1000, 10000)  # M = 0.1k, 1k, 10k
_PAPER_B_LOSSES = ("ce", "projection", "log_projection", "l1", "mse")  # pCE P LP L1 MSE on confidence labels
_NOISE_SPACE = {
    "noise_kind": {"choice": ["asymmetric", "symmetric"]},
    "noise_rate": {"choice": [0.0, 0.2, 0.4, 0.8]},
    "trusted_size": {"choice": list(_PAPER_B_SIZES)},
    "seed": {"choice": list(_TABLE_SEEDS)},
}
# Paper A §6.3 (Fig. 2, values lost with the figure): α from weak to excessive smoothing; β over [0.5, 6].
_ALPHA_GRID = [0.01, 0.05, 0.1, 0.2, 0.3, 0.5]
_BETA_GRID = [0.5, 1.0, 2.0, 3.0, 4.0, 6.0]
_PAPER_A_TABLE_FIXED: dict[str, Any] = {
    "alpha": 0.1,  # paper A §6.2
    "epochs": 200,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "scheduler": "cosine",
    "augment": True,
    "seed": 0,  # the search stage (seeds stage: seeds 0, 1, 2); ablations override
}

PRESETS.update(
    {
        "paper-b-tables": {
            "description": (
                "paper B Tables 1-3 (CIFAR-10, ResNet-34, 200 epochs, batch 256, lr 0.2, plateau: the "
                "paper's settings): grid of noise (clean; asymmetric / symmetric 0.2 0.4 0.8) x "
                "M (0.1k 1k 10k) x "
                "loss (CE on one-hot, no M; pCE P LP L1 MSE on confidence pair labels), 3 seeds, no ASHA; "
                "cells: test_accuracy_best (paper protocol, best epoch on test) and test_accuracy (last). "
                "Table 1 = asymmetric, M = 1k; Tables 2/3 = LP rows. Differs: random crop, not "
                "RandomResizedCrop"
            ),
            "fixed": {**copy.deepcopy(_PAPER_B_FIXED), **copy.deepcopy(_PAPER_B_CONFIDENCE)},
            "space": {
                "label": {"choice": ["onehot", "confidence"]},
                "loss": {"choice": list(_PAPER_B_LOSSES)},
                **copy.deepcopy(_NOISE_SPACE),
            },
            "only_for": {"loss": ["confidence"], "trusted_size": ["confidence"]},
            "search": "grid",
            "points": [
                {**method, "noise_kind": kind, "noise_rate": rate, "seed": seed}
                for kind, rate in _PAPER_B_SETTINGS
                for method in (
                    {"label": "onehot"},  # paper B "CE-RN34, M = -"
                    *(
                        {"label": "confidence", "loss": loss, "trusted_size": m}
                        for m in _PAPER_B_SIZES
                        for loss in _PAPER_B_LOSSES
                    ),
                )
                for seed in _TABLE_SEEDS
            ],
            "objective": "val_accuracy:max",
            **copy.deepcopy(_TABLE_RUN),
        },
        "paper-b-controls": {
            "description": (
                "controls for paper B Tables 1-3 (not in the paper; same settings as paper-b-tables): "
                "'trusted_only' = one-hot CE on the M clean trusted images alone (noise-free, so one "
                "column), 'onehot_trusted' = one-hot CE on the noisy set with the M trusted labels clean; "
                "M 0.1k 1k 10k, 3 seeds, no ASHA"
            ),
            "fixed": copy.deepcopy(_PAPER_B_FIXED),
            "space": {"label": {"choice": ["trusted_only", "onehot_trusted"]}, **copy.deepcopy(_NOISE_SPACE)},
            "search": "grid",
            "points": [
                {"label": "trusted_only", "noise_kind": "asymmetric", "noise_rate": 0.0}
                | {"trusted_size": m, "seed": seed}
                for m in _PAPER_B_SIZES
                for seed in _TABLE_SEEDS
            ]
            + [
                {"label": "onehot_trusted", "noise_kind": kind, "noise_rate": rate}
                | {"trusted_size": m, "seed": seed}
                for kind, rate in _PAPER_B_SETTINGS
                for m in _PAPER_B_SIZES
                for seed in _TABLE_SEEDS
            ],
            "objective": "val_accuracy:max",
            **copy.deepcopy(_TABLE_RUN),
        },
        "paper-a-table1": {
            "description": (
                "paper A Table 1 (CIFAR-100; --data-dir = a CIFAR-100 image folder/zip or torchvision root): "
                "DenseNet-BC-100 (for DenseNet-161), ResNet-18, WRN-28-1; one-hot / uniform / mixup / "
                "L1 L2 AE WE similarity labels (alpha 0.1), 200 epochs; stage search: beta grid "
                "0.5-6 on validation NLL (seed 0), stage seeds: each method's chosen beta per network on "
                "3 seeds; TS / ETS / Dir-ODIR rows from the one-hot runs (post-hoc)"
            ),
            "fixed": {"dataset": "cifar100", **copy.deepcopy(_PAPER_A_TABLE_FIXED)},
            "space": {
                "model": {"choice": ["densenet_bc", "resnet18", "wrn"]},
                "label": {"choice": ["onehot", "uniform", "mixup", "similarity"]},
                "similarity": {"choice": ["l1", "l2", "ae", "we"]},
                "beta": {"choice": list(_BETA_GRID)},
            },
            "model_args": copy.deepcopy(_CIFAR_MODEL_ARGS),
            "source_args": {
                "we": {"vectors": f"{DATA}/vectors/cifar100-glove-100d.txt"},
                "ae": {"latent_dim": 256},  # paper A §6.1
            },
            "search": "grid",
            "seeds": len(_TABLE_SEEDS),
            "seeds_group_by": ["model"],
            "objective": "val_nll:min",
            **copy.deepcopy(_TABLE_RUN),
        },
        "paper-a-table2": {
            "description": (
                "paper A Table 2 (Tiny-ImageNet: the shared 200-images-per-class training subset, official "
                "val as test; --set dataset=tinyimagenet --set data_dir=<tiny-imagenet-200> for the full "
                "set): DenseNet-BC-100, ResNet-34, WRN-28-2 (for DenseNet-161, ResNet-34, WRN-50-2); "
                "one-hot / uniform / mixup / L1 L2 AE (latent 1024) labels; WE needs a word-vector file "
                "(--set similarity=l1,l2,ae,we --set source_args.we.vectors=FILE); beta grid search, then "
                "3 seeds per method and network"
            ),
            "fixed": {
                "dataset": "imagefolder",
                "data_dir": f"{DATA}/tiny-imagenet-200-train200.zip",
                **copy.deepcopy(_PAPER_A_TABLE_FIXED),
            },
            "space": {
                "model": {"choice": ["densenet_bc", "resnet34", "wrn"]},
                "label": {"choice": ["onehot", "uniform", "mixup", "similarity"]},
                "similarity": {"choice": ["l1", "l2", "ae"]},
                "beta": {"choice": list(_BETA_GRID)},
            },
            "model_args": {
                "wrn": {"depth": 28, "widen_factor": 2},
                "densenet_bc": {"depth": 100, "growth_rate": 12},
            },
            "source_args": {"ae": {"latent_dim": 1024}},  # paper A §6.1
            "search": "grid",
            "seeds": len(_TABLE_SEEDS),
            "seeds_group_by": ["model"],
            "objective": "val_nll:min",
            **copy.deepcopy(_TABLE_RUN),
        },
        "paper-a-alpha": {
            "description": (
                "paper A §6.3 Fig. 2a-b, alpha ablation: uniform LS vs WE similarity labels (beta 2) at "
                f"alpha {_ALPHA_GRID} (+ one-hot), 3 seeds each, ResNet-18, 200 epochs. Scaled: CIFAR-10 "
                "with the shared word vectors (the paper: Tiny-ImageNet, whose vectors are not shipped)"
            ),
            "fixed": {
                "dataset": "cifar10",
                "data_dir": f"{DATA}/cifar10-jpeg.zip",
                "model": "resnet18",
                **{k: v for k, v in _PAPER_A_TABLE_FIXED.items() if k not in ("alpha", "seed")},
                "similarity": "we",
                "beta": 2.0,  # paper A §6.3
                "recalibrate": False,
            },
            "space": {
                "label": {"choice": ["onehot", "uniform", "similarity"]},
                "alpha": {"choice": list(_ALPHA_GRID)},
                "seed": {"choice": list(_TABLE_SEEDS)},
            },
            "source_args": copy.deepcopy(_CIFAR10_SOURCE_ARGS),
            "search": "grid",
            "objective": "val_nll:min",
            **copy.deepcopy(_TABLE_RUN),
        },
        "paper-a-beta": {
            "description": (
                "paper A §6.3 Fig. 2c, beta ablation: WE similarity labels at alpha 0.1 and beta "
                f"{_BETA_GRID} (+ uniform LS), 3 seeds each, ResNet-18, 200 epochs. Scaled: CIFAR-10 with "
                "the shared word vectors (the paper: Tiny-ImageNet)"
            ),
            "fixed": {
                "dataset": "cifar10",
                "data_dir": f"{DATA}/cifar10-jpeg.zip",
                "model": "resnet18",
                **{k: v for k, v in _PAPER_A_TABLE_FIXED.items() if k != "seed"},  # alpha 0.1 (§6.3)
                "similarity": "we",
                "recalibrate": False,
            },
            "space": {
                "label": {"choice": ["uniform", "similarity"]},
                "beta": {"choice": list(_BETA_GRID)},
                "seed": {"choice": list(_TABLE_SEEDS)},
            },
            "source_args": copy.deepcopy(_CIFAR10_SOURCE_ARGS),
            "search": "grid",
            "objective": "val_nll:min",
            **copy.deepcopy(_TABLE_RUN),
        },
    }
)


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of preset `name`; an unknown name lists the valid ones."""
    if name not in PRESETS:
        raise SpecError(
            "preset", f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; valid: {', '.join(PRESETS)}"
        )
    return copy.deepcopy(PRESETS[name])


# ---------------------------------------------------------------------------------------------
# Second reproduction round (issue 16): the papers' protocols at the largest scale a 2-core CPU allows in a
# few sessions of resumable sweeps. Measured here (AMD EPYC Zen 4, 2 cores, resnet20, precision auto):
# one epoch of 10,000 images plus the per-epoch test pass (10,000 images) takes ~20 s with both cores.
# Scaled against the papers (stated next to every number in RESULTS.md): CIFAR ResNet-20 (paper B:
# ResNet-34), 1,000 training images per class (paper: 5,000), 20 epochs with a cosine schedule (paper B:
# 200 epochs, plateau), batch 128 at lr 0.05.
_REPRO2_B_FIXED: dict[str, Any] = {
    **copy.deepcopy(_REPRO_FIXED),
    "subset_per_class": 1000,  # 10,000 training images: 2x the first round
    "epochs": 20,
    "eval_every": 20,  # validation once, at the end (the test pass runs every epoch, below)
    "test_accuracy_every": 1,  # paper B picks the epoch with the best test accuracy: log every epoch
    "recalibrate": False,  # paper B reports accuracy only
    "trusted_size": 200,  # paper B's M = 1k of 50k is 2 %; 2 % of 10,000
    **copy.deepcopy(_PAPER_B_CONFIDENCE),
}
_REPRO2_B_METHODS = (
    {"label": "onehot"},  # CE on one-hot labels (paper B "CE-RN34, M = -")
    {"label": "confidence", "loss": "projection"},
    {"label": "confidence", "loss": "log_projection"},
    {"label": "onehot_trusted"},  # control: CE with the trusted labels clean
)
PRESETS.update(
    {
        "repro2-b-cifar10": {
            "description": (
                "issue 16, paper B Tables 1-3 scaled (ResNet-20, precision auto, 1,000 images per class, "
                "20 epochs cosine, M = 200 = 2 %): asymmetric 0.4 / 0.8 and symmetric 0.4 x CE, P, LP and "
                "the controls CE + clean trusted (per setting) and trusted only (noise-free, once), seeds "
                "0-2 (seed-major order, so a cut-short sweep has whole seeds); test accuracy every epoch"
            ),
            "fixed": copy.deepcopy(_REPRO2_B_FIXED),
            "space": {
                "label": {"choice": ["onehot", "confidence", "onehot_trusted", "trusted_only"]},
                "loss": {"choice": ["projection", "log_projection"]},
                "noise_kind": {"choice": ["asymmetric", "symmetric"]},
                "noise_rate": {"choice": [0.0, 0.4, 0.8]},
                "seed": {"choice": list(_REPRO_SEEDS)},
            },
            # CE on one-hot labels has no trusted set (paper B "M = -"): its 200 are noised like the rest
            "only_for": {
                "loss": ["confidence"],
                "trusted_size": ["confidence", "onehot_trusted", "trusted_only"],
            },
            "search": "grid",
            "points": [
                point
                for seed in _REPRO_SEEDS
                for point in (
                    *(
                        {**method, "noise_kind": kind, "noise_rate": rate, "seed": seed}
                        for kind, rate in _REPRO_B_SETTINGS
                        for method in _REPRO2_B_METHODS
                    ),
                    {"label": "trusted_only", "noise_kind": "asymmetric", "noise_rate": 0.0, "seed": seed},
                )
            ],
            "objective": "val_accuracy:max",
            **copy.deepcopy(_REPRO_RUN),
        },
    }
)


# Paper A, second round (issue 16). CIFAR-10: 500 training images per class (5,000; paper 45,000), 40
# epochs cosine with augmentation, so the one-hot ResNet-20 overfits its training set and is
# over-confident, as the papers' networks are (its ECE is reported first in RESULTS.md). Tiny-ImageNet: the
# shared 200-images-per-class subset, 100 per class used (20,000; paper 100,000), decoded at 32x32 (paper
# 64x64) so that ResNet-20 runs at CIFAR cost, 30 epochs. beta searched on validation NLL over a grid
# (paper A §6.2: [0.5, 6]) on seed 0, then every method's choice re-run on seeds 0-2 (`seeds: 3`).
_REPRO2_A_BETAS = (1.0, 2.0, 4.0)
_REPRO2_A_FIXED: dict[str, Any] = {
    **copy.deepcopy(_REPRO_FIXED),
    "subset_per_class": 500,
    "val_fraction": 0.04,  # 2,000 validation images (selection of beta, post-hoc TS / ETS / Dir-ODIR)
    "epochs": 40,
    "eval_every": 40,
    "alpha": 0.1,  # paper A §6.2
    "recalibrate": True,  # TS, ETS, Dir-ODIR rows from the one-hot runs (paper A Table 1)
    "seed": 0,
}
_REPRO2_A_SPACE = {
    "label": {"choice": ["onehot", "uniform", "mixup", "similarity"]},
    "beta": {"choice": list(_REPRO2_A_BETAS)},
}
# repro2-a-cifar10's OOD sets (paper A §6.4); the alpha and beta ablations evaluate the same way (and
# recalibrate), so that the points they share with it are the same runs (`--reuse`, sweeps/reuse.py)
_REPRO2_A_C10_OOD: dict[str, Any] = {
    "ood_samples": 2000,  # uniform noise (paper A §6.4 Fig. 3)
    # ... and a real unseen dataset: Tiny-ImageNet's 10,000 validation images at 32x32
    "ood_dataset": "tinyimagenet",
    "ood_data_dir": f"{DATA}/tiny-imagenet-200-train200.zip",
    "ood_dataset_args": {"image_size": 32},
}
PRESETS.update(
    {
        "repro2-a-cifar10": {
            "description": (
                "issue 16, paper A Table 1 protocol scaled to CIFAR-10 (ResNet-20, precision auto, 500 "
                "images per class, 40 epochs): one-hot (+ post-hoc TS, ETS, Dir-ODIR), uniform LS, mixup "
                "and similarity labels from L1, L2, AE, WE (CIFAR-10 word vectors) and WordNet; beta grid "
                f"{list(_REPRO2_A_BETAS)} on validation NLL (seed 0), then each method's choice on seeds "
                "0-2; "
                "OOD confidences on uniform noise and on Tiny-ImageNet validation images at 32x32"
            ),
            "fixed": {
                **copy.deepcopy(_REPRO2_A_FIXED),
                **copy.deepcopy(_REPRO2_A_C10_OOD),
            },
            "space": {
                **copy.deepcopy(_REPRO2_A_SPACE),
                "similarity": {"choice": ["l1", "l2", "ae", "we", "wordnet"]},
            },
            "source_args": copy.deepcopy(_CIFAR10_SOURCE_ARGS),
            "search": "grid",
            "seeds": len(_REPRO_SEEDS),
            "objective": "val_nll:min",
            **copy.deepcopy(_REPRO_RUN),
        },
        "repro2-a-tinyimagenet": {
            "description": (
                "issue 16, paper A Table 2 protocol scaled to the shared Tiny-ImageNet subset (ResNet-20, "
                "precision auto, 100 images per class at 32x32, 30 epochs): one-hot (+ TS, ETS, Dir-ODIR), "
                "uniform LS, mixup and similarity labels from L1, L2, AE and WordNet (synsets from the "
                "wnids; no word vectors exist here for these classes, so WordNet stands in for WE); beta "
                f"grid {list(_REPRO2_A_BETAS)} on validation NLL (seed 0), then seeds 0-2"
            ),
            "fixed": {
                **copy.deepcopy(_REPRO2_A_FIXED),
                "dataset": "tinyimagenet",
                "data_dir": f"{DATA}/tiny-imagenet-200-train200.zip",
                "dataset_args": {"image_size": 32},
                "subset_per_class": 100,
                "val_fraction": 0.1,  # 20 of the 200 images per class (4,000)
                "epochs": 30,
                "eval_every": 30,
            },
            "space": {
                **copy.deepcopy(_REPRO2_A_SPACE),
                "similarity": {"choice": ["l1", "l2", "ae", "wordnet"]},
            },
            "source_args": {"ae": {"latent_dim": 256}},
            "search": "grid",
            "seeds": len(_REPRO_SEEDS),
            "objective": "val_nll:min",
            **copy.deepcopy(_REPRO_RUN),
        },
        "repro2-a-alpha": {
            "description": (
                "issue 16, paper A §6.3 alpha ablation on CIFAR-10 (the smaller dataset; repro2-a-cifar10's "
                "scale): uniform LS vs WE similarity labels at beta 2, alpha 0.05 0.1 0.2 0.4 (+ one-hot), "
                "seeds 0-2"
            ),
            "fixed": {
                **{k: v for k, v in _REPRO2_A_FIXED.items() if k not in ("alpha", "seed")},
                "similarity": "we",
                "beta": 2.0,  # paper A §6.3
                **copy.deepcopy(_REPRO2_A_C10_OOD),  # and recalibrate: the same runs as repro2-a-cifar10
            },
            "space": {
                "label": {"choice": ["onehot", "uniform", "similarity"]},
                "alpha": {"choice": [0.05, 0.1, 0.2, 0.4]},
                "seed": {"choice": list(_REPRO_SEEDS)},
            },
            "source_args": copy.deepcopy(_CIFAR10_SOURCE_ARGS),
            "search": "grid",
            "objective": "val_nll:min",
            **copy.deepcopy(_REPRO_RUN),
        },
        "repro2-a-beta": {
            "description": (
                "issue 16, paper A §6.3 beta ablation on CIFAR-10 (repro2-a-cifar10's scale): WE similarity "
                "labels at alpha 0.1, beta 0.5 1 2 4 6 (+ uniform LS), seeds 0-2"
            ),
            "fixed": {
                **{k: v for k, v in _REPRO2_A_FIXED.items() if k != "seed"},  # alpha 0.1 (paper A §6.3)
                "similarity": "we",
                **copy.deepcopy(_REPRO2_A_C10_OOD),  # and recalibrate: the same runs as repro2-a-cifar10
            },
            "space": {
                "label": {"choice": ["uniform", "similarity"]},
                "beta": {"choice": [0.5, 1.0, 2.0, 4.0, 6.0]},
                "seed": {"choice": list(_REPRO_SEEDS)},
            },
            "source_args": copy.deepcopy(_CIFAR10_SOURCE_ARGS),
            "search": "grid",
            "objective": "val_nll:min",
            **copy.deepcopy(_REPRO_RUN),
        },
    }
)
