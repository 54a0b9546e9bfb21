"""SdAE pretraining: plain-PyTorch models (``pretrain.models``), mmengine glue
(``pretrain.engine``) and image-folder data (``pretrain.data``)."""
