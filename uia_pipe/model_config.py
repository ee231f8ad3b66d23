"""Settings of each model (`train.<model>`) and the names the train section is checked
against: a schema leaf (pydantic only), so that validating params imports no torch.
`uia_pipe.models` builds the models (its MODELS and WRAPPERS assert they agree with
MODEL_CONFIGS and TASKS); `uia_pipe.tasks` says what each task's output and loss are."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# train.task, in this order (uia_pipe.tasks).
TASKS = ("classification", "regression", "autoencoder", "language_model")


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Widths up to 16x the reference ConvNet's 64: at 1,024 its 4w-channel convs already hold ~0.7 billion weights.
MAX_WIDTH = 1024
# Hidden layers of an MLP: at most 16 of at most 8,192 units (~1 billion weights in all).
HiddenWidth = Annotated[int, Field(ge=1, le=8192)]


class ConvNetConfig(_Config):
    width: int = Field(64, ge=1, le=MAX_WIDTH, description="channels of the first conv (reference: 64)")


class MLPConfig(_Config):
    hidden: list[HiddenWidth] = Field([256, 128], min_length=1, max_length=16, description="hidden layer widths")


class TabularMLPConfig(_Config):
    hidden: list[HiddenWidth] = Field([64, 32], min_length=1, max_length=16, description="hidden layer widths")


class ResNet18Config(_Config):
    pass


class LinearConfig(_Config):
    pass


class LeNetConfig(_Config):
    width: int = Field(12, ge=1, le=MAX_WIDTH, description="channels of each conv (DLG's LeNet: 12)")
    activation: Literal["relu", "sigmoid"] = Field("relu", description="DLG used sigmoid")


# A ViT block holds (4 + 2·mlp_ratio)·dim² weights: at dim 1,024, mlp_ratio 8 and depth 48, ~1 billion in all.
class ViTConfig(_Config):
    patch: int = Field(4, ge=1, le=256, description="side of the square patches, each one token (ViT-B: 16)")
    dim: int = Field(64, ge=1, le=MAX_WIDTH, description="token width (ViT-B: 768)")
    depth: int = Field(2, ge=1, le=48, description="transformer blocks (ViT-B: 12)")
    heads: int = Field(4, ge=1, le=MAX_WIDTH, description="attention heads, dividing dim (ViT-B: 12)")
    mlp_ratio: int = Field(2, ge=1, le=8, description="MLP hidden width over dim (ViT-B: 4)")

    @field_validator("heads")
    @classmethod
    def _divides_dim(cls, v: int, info: ValidationInfo) -> int:
        dim = info.data.get("dim")
        if dim is not None and dim % v:
            raise ValueError(f"heads must divide dim (got heads {v}, dim {dim})")
        return v


class CharLSTMConfig(_Config):
    embedding: int = Field(32, ge=1, le=MAX_WIDTH, description="character embedding width")
    hidden: int = Field(64, ge=1, le=4096, description="LSTM state width")
    layers: int = Field(1, ge=1, le=8, description="stacked LSTM layers")


class CharTransformerConfig(_Config):
    dim: int = Field(64, ge=1, le=MAX_WIDTH, description="token width")
    depth: int = Field(2, ge=1, le=48, description="causal transformer blocks")
    heads: int = Field(4, ge=1, le=MAX_WIDTH, description="attention heads, dividing dim")
    mlp_ratio: int = Field(2, ge=1, le=8, description="MLP hidden width over dim")

    _divides_dim = field_validator("heads")(ViTConfig._divides_dim.__func__)


# Model name (the params key, train.model) -> its config type, in models.MODELS's order.
MODEL_CONFIGS: dict[str, type[_Config]] = {
    "mlp": MLPConfig,
    "convnet": ConvNetConfig,
    "lenet": LeNetConfig,
    "resnet18": ResNet18Config,
    "tabular_mlp": TabularMLPConfig,
    "linear": LinearConfig,
    "vit": ViTConfig,
    "char_lstm": CharLSTMConfig,
    "char_transformer": CharTransformerConfig,
}
