"""MLflow models-from-code entry: logged as code with a registered version, never imported by
the package itself. Loads the version's spiralray model directory artifact (safetensors +
config) through the package's own loader; ``predict`` maps an image (H x W) to labels."""

import mlflow
from mlflow.pyfunc import PythonModel


class SpiralNetModel(PythonModel):
    def load_context(self, context):
        from spiralray import modelzoo
        from spiralray.core.engine import Engine

        self.engine = Engine(modelzoo.load(context.artifacts["spiralnet"]))

    def predict(self, context, model_input, params=None):
        import numpy as np

        return self.engine.segment(np.asarray(model_input)).labels


mlflow.models.set_model(SpiralNetModel())
