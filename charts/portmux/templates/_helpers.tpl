{{/*
Names. With the release name "portmux" every object gets the name it has in
config/default (portmux-controller-manager, portmux-manager, ...).
*/}}
{{- define "portmux.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portmux.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Deployment, and the ServiceAccount unless serviceAccount.name says otherwise. */}}
{{- define "portmux.managerName" -}}
{{- printf "%s-controller-manager" (include "portmux.fullname" .) }}
{{- end }}

{{- define "portmux.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portmux.managerName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "portmux.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "portmux.labels" -}}
helm.sh/chart: {{ include "portmux.chart" . }}
app.kubernetes.io/name: {{ include "portmux.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: portmux
{{- end }}

{{/* What the Services, the PodDisruptionBudget and the Deployment select. */}}
{{- define "portmux.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portmux.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "portmux.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Whether to render the ServiceMonitor: true, or "auto" and the cluster serves the CRD. */}}
{{- define "portmux.serviceMonitor" -}}
{{- $sm := .Values.metrics.serviceMonitor.enabled }}
{{- if and .Values.metrics.enabled (or (eq (toString $sm) "true") (and (eq (toString $sm) "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor"))) }}true{{ end }}
{{- end }}

{{/* Checks that make no sense to express in values.schema.json. */}}
{{- define "portmux.validate" -}}
{{- if and (not .Values.leaderElection.enabled) (gt (int .Values.replicaCount) 1) }}
{{- fail "leaderElection.enabled=false needs replicaCount=1: with more replicas every pod would write status" }}
{{- end }}
{{- $seen := dict }}
{{- $bound := dict }}
{{- range .Values.service.ports }}
{{- if hasKey $seen .name }}
{{- fail (printf "service.ports: the name %q is used twice" .name) }}
{{- end }}
{{- if has .name (list "metrics" "health") }}
{{- fail (printf "service.ports: %q is the name of a port the pod already has" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- $key := printf "%v/%s" (default .port .targetPort) (default "TCP" .protocol) }}
{{- if hasKey $bound $key }}
{{- fail (printf "service.ports: %q and %q both reach the dataplane's %s: a TCP and a UDP port may share a number, two of one protocol may not" (get $bound $key) .name $key) }}
{{- end }}
{{- $_ := set $bound $key .name }}
{{- end }}
{{- end }}
