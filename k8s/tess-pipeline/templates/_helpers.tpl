{{/* Names, labels and the pieces every pipeline container shares. */}}

{{- define "tess.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tess.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The DaskCluster's name: the operator names the scheduler Service "<name>-scheduler",
     so at most 53 characters. */}}
{{- define "tess.daskCluster" -}}
{{- printf "%s-dask" (include "tess.fullname" . | trunc 48 | trimSuffix "-") -}}
{{- end -}}

{{- define "tess.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "tess.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tess-pipeline
{{- end -}}

{{/* call with (dict "root" $ "component" "api") */}}
{{- define "tess.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tess.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tess.componentLabels" -}}
{{ include "tess.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tess.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" (required "image.repository is required" $image.repository) $image.digest -}}
{{- else -}}
{{- printf "%s:%s" (required "image.repository is required" $image.repository) (default .Chart.AppVersion $image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "tess.secretName" -}}
{{- .Values.credentials.existingSecret | default (printf "%s-credentials" (include "tess.fullname" .)) -}}
{{- end -}}

{{- define "tess.minioHost" -}}
{{- printf "%s-minio" (include "tess.fullname" .) -}}
{{- end -}}

{{- define "tess.mongoHost" -}}
{{- printf "%s-mongodb" (include "tess.fullname" .) -}}
{{- end -}}

{{- define "tess.storeUrl" -}}
{{- if .Values.store.url -}}
{{- .Values.store.url -}}
{{- else if .Values.minio.enabled -}}
{{- printf "s3://%s" .Values.minio.bucket -}}
{{- else -}}
{{- fail "store.url is required when minio.enabled is false (e.g. s3://bucket/prefix)" -}}
{{- end -}}
{{- end -}}

{{- define "tess.s3Endpoint" -}}
{{- if .Values.store.s3Endpoint -}}
{{- .Values.store.s3Endpoint -}}
{{- else if and .Values.minio.enabled (not .Values.store.url) -}}
{{- printf "http://%s:9000" (include "tess.minioHost" .) -}}
{{- end -}}
{{- end -}}

{{- define "tess.scheduler" -}}
{{- printf "tcp://%s-scheduler:8786" (include "tess.daskCluster" .) -}}
{{- end -}}

{{/* Pod and container security: the image's non-root user (uid 1000). Same as
     pipeline/k8s_spec.py pod_security_context / container_security_context. */}}
{{- define "tess.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tess.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
{{- end -}}

{{- define "tess.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "tess.secretName" .root }}
      key: {{ .key }}
{{- end -}}

{{/* The TESS_* settings (pipeline/k8s_spec.py settings_env): store and endpoint as
     values, S3 credentials and the MongoDB URL from the Secret. */}}
{{- define "tess.settingsEnv" -}}
- name: TESS_STORE
  value: {{ include "tess.storeUrl" . | quote }}
{{- with include "tess.s3Endpoint" . }}
- name: TESS_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{ include "tess.secretEnv" (dict "root" . "name" "TESS_S3_KEY" "key" "s3-access-key") }}
{{ include "tess.secretEnv" (dict "root" . "name" "TESS_S3_SECRET" "key" "s3-secret-key") }}
{{ include "tess.secretEnv" (dict "root" . "name" "TESS_MONGO_URL" "key" "mongo-url") }}
{{- end -}}

{{/* Settings of clients of the Dask cluster (API, Jupyter). */}}
{{- define "tess.clientEnv" -}}
{{ include "tess.settingsEnv" . }}
- name: TESS_SCHEDULER
  value: {{ include "tess.scheduler" . | quote }}
{{- with .Values.scheduler.dashboardLink }}
- name: DASK_DISTRIBUTED__DASHBOARD__LINK
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "tess.pvc" -}}
accessModes:
  - ReadWriteOnce
{{- with .storageClass }}
storageClassName: {{ . | quote }}
{{- end }}
resources:
  requests:
    storage: {{ .size | quote }}
{{- end -}}
