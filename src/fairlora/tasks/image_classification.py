"""Image classification: AutoModelForImageClassification + AutoImageProcessor (`image_classification`)."""
