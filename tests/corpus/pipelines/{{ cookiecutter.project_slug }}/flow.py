from prefect import flow


@flow(name="{{ cookiecutter.flow_name }}")
def {{ cookiecutter.function_name }}():
    {% if cookiecutter.use_tasks %}pass{% endif %}
