{{/* Labels of every afhub object; `component` names the part. */}}
{{- define "afhub.labels" -}}
app.kubernetes.io/name: afhub
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{- define "afhub.selector" -}}
app.kubernetes.io/name: afhub
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Non-root, read-only, no privilege: every afhub container. */}}
{{- define "afhub.containerSecurity" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 100
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "afhub.podSecurity" -}}
runAsNonRoot: true
fsGroup: 100
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The environment every afhub service shares: settings, database, the hub's API. */}}
{{- define "afhub.serviceEnv" -}}
- name: AFHUB_CONFIG
  value: /etc/afhub/afhub.yaml
- name: AFHUB_HOME
  value: /tmp/afhub
{{- if ne .component "dashboards" }}
- name: AFHUB_DB_URL
  valueFrom:
    secretKeyRef: {name: afhub-database, key: url}
{{- end }}
- name: AFHUB_CHECKPOINT_INTERVAL
  value: {{ .root.Values.afhub.ledger.checkpointInterval | quote }}
- name: AFHUB_GRACE_PERIOD
  value: {{ .root.Values.afhub.ledger.gracePeriod | quote }}
- name: JUPYTERHUB_API_URL
  value: http://hub:8081/hub/api
- name: JUPYTERHUB_BASE_URL
  value: /
- name: JUPYTERHUB_SERVICE_NAME
  value: {{ .service }}
- name: JUPYTERHUB_SERVICE_PREFIX
  value: /services/{{ .service }}/
- name: JUPYTERHUB_CLIENT_ID
  value: service-{{ .service }}
- name: JUPYTERHUB_OAUTH_CALLBACK_URL
  value: /services/{{ .service }}/oauth_callback
- name: JUPYTERHUB_COOKIE_OPTIONS
  value: '{"samesite": "Lax"}'
- name: AFHUB_PAGES_PREFIX
  value: /services/afhub/
- name: JUPYTERHUB_API_TOKEN
  valueFrom:
    secretKeyRef: {name: hub, key: hub.services.{{ .service }}.apiToken}
{{- end }}

{{- define "afhub.configVolume" -}}
- name: afhub-config
  configMap: {name: afhub-config}
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "afhub.configMounts" -}}
- name: afhub-config
  mountPath: /etc/afhub
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "afhub.image" -}}
{{ .name }}:{{ .tag }}
{{- end }}

{{- /* the facility's pages (afhub.web): where the services' APIs are, the navbar links
(afhub.hubconfig.pages writes the same in local mode) */ -}}
{{- define "afhub.pagesConfig" -}}
{{- $endpoints := dict "facility" "http://afhub-facility:8082/services/facility/api/" "fitting" "http://afhub-fitting:8083/services/fitting/api/" "gateway" "http://proxy-public/services/dask-gateway/api/v1/" }}
{{- $nav := list (dict "label" "Groups" "url" "/services/afhub/groups") (dict "label" "My usage" "url" "/services/afhub/usage") (dict "label" "Resources" "url" "/services/afhub/resources") }}
{{- dict "hub_prefix" "/hub/" "endpoints" $endpoints "nav" $nav | toJson }}
{{- end }}
