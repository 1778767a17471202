{{- define "defender-operator.name" -}}{{ .Values.nameOverride | default "defender-operator" | trunc 63 | trimSuffix "-" }}{{- end }}

{{- define "defender-operator.fullname" -}}
{{- if .Values.fullnameOverride }}{{ .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "defender-operator.name" . }}
{{- if contains $name .Release.Name }}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}{{ printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}
{{- end }}

{{- define "defender-operator.labels" -}}
app.kubernetes.io/name: {{ include "defender-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The `helm test` pod's: the release's, never the operator pods' selector (templates/tests). */}}
{{- define "defender-operator.testLabels" -}}
app.kubernetes.io/name: {{ include "defender-operator.name" . | trunc 58 | trimSuffix "-" }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "defender-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "defender-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "defender-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}{{ default (include "defender-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}{{ default "default" .Values.serviceAccount.name }}{{ end }}
{{- end }}

{{/* The operator's permissions: exactly what it calls (docs/operations.md, "RBAC"). */}}
{{- define "defender-operator.rules" -}}
# delete: only an object its namespace's deletion missed (kubernetes/kubernetes#127977), which nothing else can change
- apiGroups: [defender-operator.io]
  resources: [awsconnectors]
  verbs: [get, list, watch, patch, delete]
- apiGroups: [defender-operator.io]
  resources: [awsconnectors/status]
  verbs: [get, patch]
- apiGroups: [defender-operator.io]
  resources: [awsconnectors/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [events]
  verbs: [create, get, patch]
{{- if .Values.rbac.readSecrets }}
# get: the credentials an AWSConnector names; patch: only its finalizers, so a Secret cleanup needs outlives its
# namespace (the secret-guard ValidatingAdmissionPolicy refuses any other change by the operator).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, patch]
{{- end }}
{{- end }}
