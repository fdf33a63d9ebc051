"""Model zoo: plain ``nn.Module``s, usable without Lightning, built by name.

>>> model = get_model("ar5", frames=20, num_classes=6)  # AR5 fused; modalities=["video"] for video-only
>>> logits = model(video=torch.randn(2, 20, 98, 80), audio=torch.randn(2, 1, 128, 128))
"""

from fer_mm.models.registry import (get_model, list_models, modality_argument, model_modalities,  # noqa: F401
                                    register_model)

# importing the families registers their builders
from fer_mm.models import ar_cnn, ar3d, fusion, image_cnn, inception, resnet, temporal  # noqa: E402,F401
