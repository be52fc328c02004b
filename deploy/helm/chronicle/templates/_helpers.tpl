{{/* Chart name, truncated for label limits. */}}
{{- define "chronicle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; component names append "-history" etc., so keep room. */}}
{{- define "chronicle.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "chronicle.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "chronicle.labels" -}}
helm.sh/chart: {{ include "chronicle.chart" . }}
app.kubernetes.io/name: {{ include "chronicle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chronicle
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "history"). */}}
{{- define "chronicle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chronicle.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "chronicle.componentLabels" -}}
{{ include "chronicle.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "chronicle.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "chronicle.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "chronicle.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The history headless Service: stable DNS for every history pod, ready or not. */}}
{{- define "chronicle.historyHeadless" -}}
{{- printf "%s-history-headless" (include "chronicle.fullname" .) -}}
{{- end -}}

{{/* Internal addresses of every history pod, comma-separated (the cluster's members). */}}
{{- define "chronicle.historyAddrs" -}}
{{- $full := include "chronicle.fullname" . -}}
{{- $svc := include "chronicle.historyHeadless" . -}}
{{- $addrs := list -}}
{{- range $i := until (int .Values.history.replicaCount) -}}
{{- $addrs = append $addrs (printf "%s-history-%d.%s.%s.svc.%s:%d" $full $i $svc $.Release.Namespace $.Values.clusterDomain (int $.Values.ports.internal)) -}}
{{- end -}}
{{- join "," $addrs -}}
{{- end -}}

{{/* The matching headless Service: stable DNS for every matching pod. */}}
{{- define "chronicle.matchingHeadless" -}}
{{- printf "%s-matching-headless" (include "chronicle.fullname" .) -}}
{{- end -}}

{{/* Internal addresses of every matching pod, comma-separated (the matching ring's nodes). */}}
{{- define "chronicle.matchingAddrs" -}}
{{- $full := include "chronicle.fullname" . -}}
{{- $svc := include "chronicle.matchingHeadless" . -}}
{{- $addrs := list -}}
{{- range $i := until (int .Values.matching.replicaCount) -}}
{{- $addrs = append $addrs (printf "%s-matching-%d.%s.%s.svc.%s:%d" $full $i $svc $.Release.Namespace $.Values.clusterDomain (int $.Values.ports.internal)) -}}
{{- end -}}
{{- join "," $addrs -}}
{{- end -}}

{{/* Pod annotations shared by every component: the config checksum rolls pods when it changes. */}}
{{- define "chronicle.podAnnotations" -}}
checksum/config: {{ include (print .ctx.Template.BasePath "/configmap.yaml") .ctx | sha256sum }}
{{- if .ctx.Values.metrics.annotations.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .ctx.Values.ports.metrics | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .ctx.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- with .component.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Container security context: the restricted profile, whatever the values add. */}}
{{- define "chronicle.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{/* TLS settings as the server's CHRONICLE_* variables. Call with (dict "root" $ "frontend" bool):
node-to-node TLS on every pod and the init Job, the public API's TLS on frontends only. */}}
{{- define "chronicle.tlsEnv" -}}
{{- $tls := .root.Values.tls }}
{{- if $tls.internode.enabled }}
- name: CHRONICLE_INTERNODE_TLS_CERT
  value: {{ printf "%s/tls.crt" $tls.internode.mountPath | quote }}
- name: CHRONICLE_INTERNODE_TLS_KEY
  value: {{ printf "%s/tls.key" $tls.internode.mountPath | quote }}
- name: CHRONICLE_INTERNODE_TLS_CA
  value: {{ printf "%s/ca.crt" $tls.internode.mountPath | quote }}
{{- with $tls.internode.serverName }}
- name: CHRONICLE_INTERNODE_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if and .frontend $tls.frontend.enabled }}
- name: CHRONICLE_TLS_CERT
  value: {{ printf "%s/tls.crt" $tls.frontend.mountPath | quote }}
- name: CHRONICLE_TLS_KEY
  value: {{ printf "%s/tls.key" $tls.frontend.mountPath | quote }}
{{- if $tls.frontend.requireClientAuth }}
- name: CHRONICLE_TLS_CLIENT_CA
  value: {{ printf "%s/ca.crt" $tls.frontend.mountPath | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volume mounts for TLS material. */}}
{{- define "chronicle.tlsVolumeMounts" -}}
{{- range $name, $tls := .Values.tls }}
{{- if $tls.enabled }}
- name: tls-{{ $name }}
  mountPath: {{ $tls.mountPath }}
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{- define "chronicle.tlsVolumes" -}}
{{- range $name, $tls := .Values.tls }}
{{- if $tls.enabled }}
- name: tls-{{ $name }}
  secret:
    secretName: {{ $tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end -}}

{{/* Probes on the metrics port. */}}
{{- define "chronicle.probes" -}}
startupProbe:
  httpGet:
    path: /health/live
    port: metrics
  periodSeconds: 5
  failureThreshold: {{ .probes.startupFailureThreshold }}
livenessProbe:
  httpGet:
    path: /health/live
    port: metrics
  periodSeconds: {{ .probes.periodSeconds }}
  timeoutSeconds: {{ .probes.timeoutSeconds }}
  failureThreshold: {{ .probes.livenessFailureThreshold }}
readinessProbe:
  httpGet:
    path: /health/ready
    port: metrics
  periodSeconds: {{ .probes.periodSeconds }}
  timeoutSeconds: {{ .probes.timeoutSeconds }}
  failureThreshold: {{ .probes.readinessFailureThreshold }}
{{- end -}}

{{/* Env shared by every server container. */}}
{{- define "chronicle.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
# The `node` field of every log line: the pod's name.
- name: CHRONICLE_NODE_NAME
  value: $(POD_NAME)
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{- /* The frontend's JWT authorization settings (empty when off). A Secret's key set is read
from its mount and re-read when Kubernetes updates the mounted file. */ -}}
{{- define "chronicle.authEnv" -}}
{{- $a := .Values.frontend.auth -}}
{{- if or $a.jwksUrl $a.jwksSecret.name }}
- name: CHRONICLE_JWKS
  value: {{ ternary $a.jwksUrl (printf "/etc/chronicle/jwks/%s" $a.jwksSecret.key) (ne $a.jwksUrl "") | quote }}
- name: CHRONICLE_JWT_PERMISSIONS_CLAIM
  value: {{ $a.permissionsClaim | quote }}
- name: CHRONICLE_JWKS_REFRESH_SECS
  value: {{ $a.refreshSeconds | quote }}
{{- if $a.audience }}
- name: CHRONICLE_JWT_AUDIENCE
  value: {{ $a.audience | quote }}
{{- end }}
{{- end }}
{{- end }}
