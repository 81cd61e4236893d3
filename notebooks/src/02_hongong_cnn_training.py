# %% [markdown] ko
# # 02. 합성곱 신경망을 이용한 이미지 분류 (혼공머신 8-2)
# 파라미터 333,526개의 CNN을 실제 패션 MNIST로 훈련합니다: 훈련 세트의 20 %를 검증용으로 떼어 두고
# (train_test_split, random_state=42), Adam, 배치 32, 최대 20 에포크, 체크포인트와 조기 종료(patience=2).
# `CNNKIT_SMALL=1`이면 이미지 수백 장과 몇 에포크만 씁니다.
# %% [markdown] en
# # 02. Image classification with a CNN (혼공머신 8-2)
# The 333,526-parameter CNN trained on the real Fashion-MNIST: 20 % of the training set held out
# for validation (train_test_split, random_state=42), Adam, batch 32, at most 20 epochs, a
# checkpoint and early stopping (patience=2). With `CNNKIT_SMALL=1` a few hundred images and epochs.
# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from cnnkit import Trainer, create_model, decode_predictions, load_fashion_mnist, summary
from cnnkit.engine import EarlyStopping, ModelCheckpoint
from cnnkit.viz import plot_history
from cnnkit.viz.lang import figure_names

train_all, test = load_fashion_mnist()
if SMALL:
    train_all, test = train_all.take(500, seed=0), test.take(200, seed=0)
train, val = train_all.split(0.2, seed=42)
print(len(train), len(val), len(test), tuple(train.images.shape[1:]))

# %% [markdown] ko
# ## 모델과 요약
# 합성곱(32, 3×3, same) → 풀링 → 합성곱(64, 3×3, same) → 풀링 → 펼치기 → 밀집(100) → 드롭아웃 → 밀집(10).
# 파라미터: 3·3·1·32 + 32 = 320, 3·3·32·64 + 64 = 18,496, 3136·100 + 100 = 313,700, 100·10 + 10 = 1,010.
# %% [markdown] en
# ## The model and its summary
# conv(32, 3×3, same) → pool → conv(64, 3×3, same) → pool → flatten → dense(100) → dropout → dense(10).
# Parameters: 3·3·1·32 + 32 = 320, 3·3·32·64 + 64 = 18,496, 3136·100 + 100 = 313,700, 100·10 + 10 = 1,010.
# %%
model = create_model("hongong_cnn")
report = summary(model, "28x28x1", batch_size=32)
print(report)
print(report.total_params == 320 + 18_496 + 313_700 + 1_010 == 333_526)

# %% [markdown] ko
# ## 훈련: 케라스의 `fit`처럼
# `fit`은 진행 막대를 보여 주고, `history.history`는 케라스처럼 에포크별 리스트의 사전입니다.
# %% [markdown] en
# ## Training, as Keras' `fit`
# `fit` shows a progress bar; `history.history` is Keras' dict of per-epoch lists.
# %%
best = Path(tempfile.mkdtemp()) / "best-cnn-model.safetensors"
trainer = Trainer(model)
callbacks = [EarlyStopping(patience=2, restore_best_weights=True), ModelCheckpoint(best, save_best_only=True)]
history = trainer.fit(train, val, epochs=2 if SMALL else 20, batch_size=32, callbacks=callbacks)
print({k: [round(v, 4) for v in values] for k, values in history.history.items() if "loss" in k})

# %%
plot_history(history.epochs)
plt.show()

# %% [markdown] ko
# ## 평가와 예측
# 혼공머신처럼 검증 세트로 평가하고, 테스트 이미지 한 장의 클래스 확률을 봅니다.
# %% [markdown] en
# ## Evaluation and prediction
# As in 혼공머신: evaluate on the validation set, then the class probabilities of one test image.
# %%
print("validation:", trainer.evaluate_loss(val))
print("test accuracy:", round(trainer.evaluate(test)["accuracy"], 4))
probs = trainer.predict(test.images[:1])
names = figure_names(train.class_names)
for p in decode_predictions(probs, top=3, class_names=names)[0]:
    print(f"{p.name}: {p.probability:.3f}")
plt.imshow(test.images[0, 0], cmap="gray_r")
plt.title(names[int(test.labels[0])])
plt.show()
