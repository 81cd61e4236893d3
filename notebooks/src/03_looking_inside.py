# %% [markdown] ko
# # 03. 합성곱 신경망 시각화 (혼공머신 8-3)
# 훈련 전과 후의 필터, 가중치 히스토그램, 앵클 부츠 한 장의 특성 맵. 훈련된 모델은 cnnkit에 들어 있는
# 패션 MNIST 모델(`fashion`, 혼공머신 8-2의 CNN을 전체 데이터로 훈련한 것)입니다.
# %% [markdown] en
# # 03. Looking inside the CNN (혼공머신 8-3)
# Filters, weight histograms and the feature maps of one ankle boot, before and after training.
# The trained model is the Fashion-MNIST model that ships with cnnkit (`fashion`: the CNN of
# 혼공머신 8-2 trained on the full data).
# %%
import matplotlib.pyplot as plt
import torch

from cnnkit import create_model, load_fashion_mnist
from cnnkit.runs.folder import load_run
from cnnkit.viz import plot_filters, plot_layer_maps, plot_weight_histograms, to_model_input, weight_stats
from cnnkit.viz.lang import translate

trained, record = load_run("fashion", device="cpu")
torch.manual_seed(42)
untrained = create_model("hongong_cnn")
_, test = load_fashion_mnist()
boot = test.images[0]
print(translate(test.class_names)[int(test.labels[0])], tuple(boot.shape))

# %% [markdown] ko
# ## 가중치 분포
# 훈련 전에는 균등 분포(Glorot)에 가깝고, 훈련 뒤에는 0 근처에 몰린 종 모양이 됩니다.
# %% [markdown] en
# ## The weights' distribution
# Close to uniform (Glorot) before training, bell-shaped around 0 afterwards.
# %%
w_trained = trained.get_submodule("features.conv1").weight.detach()
w_untrained = untrained.get_submodule("features.conv1").weight.detach()
print("trained  :", weight_stats(w_trained))
print("untrained:", weight_stats(w_untrained))
plot_weight_histograms({"trained": w_trained, "untrained": w_untrained}, layer="features.conv1")
plt.show()

# %% [markdown] ko
# ## 필터 (첫 번째 합성곱 층의 3×3 필터 32개)
# %% [markdown] en
# ## Filters (the 32 3×3 filters of the first convolution)
# %%
plot_filters(trained, "features.conv1", vmax=0.5, title="trained")
plot_filters(untrained, "features.conv1", vmax=0.5, title="untrained")
plt.show()

# %% [markdown] ko
# ## 앵클 부츠의 특성 맵
# %% [markdown] en
# ## Feature maps of the ankle boot
# %%
x = to_model_input(boot, None, torch.device("cpu"))
plot_layer_maps(trained, x, ["features.conv1", "features.conv2"], image=boot, max_maps=32, title="trained")
plot_layer_maps(untrained, x, ["features.conv1"], image=boot, max_maps=32, title="untrained")
plt.show()
