"""Tables, figures and the HTML report built from a run's records."""
