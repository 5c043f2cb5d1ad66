{{/* Names: the release's full name, truncated to the 63 characters a label value allows. */}}
{{- define "msal-gateway.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "msal-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "msal-gateway.labels" -}}
{{ include "msal-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The development Redis has its own name label, so the gateway's selectors never match it. */}}
{{- define "msal-gateway.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "msal-gateway.redisLabels" -}}
{{ include "msal-gateway.redisSelectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "msal-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "msal-gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "msal-gateway.secretName" -}}
{{- default (include "msal-gateway.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* A throwaway in-release Redis (redis.mode standalone, deploy true). */}}
{{- define "msal-gateway.devRedis" -}}
{{- if and (eq .Values.redis.mode "standalone") .Values.redis.standalone.deploy -}}true{{- end -}}
{{- end -}}

{{/* One GATEWAY_* value as ConfigMap data: a string. Lists and maps become JSON; whole numbers
     are printed as integers (Helm reads every number as a float, which would print 1e+06). */}}
{{- define "msal-gateway.envValue" -}}
{{- if kindIs "string" . -}}
{{- . | quote -}}
{{- else if or (kindIs "slice" .) (kindIs "map" .) -}}
{{- toJson . | quote -}}
{{- else if and (kindIs "float64" .) (eq (floor .) .) -}}
{{- int64 . | quote -}}
{{- else -}}
{{- toString . | quote -}}
{{- end -}}
{{- end -}}

{{/* forward-auth mode: the gateway alone, answering an ingress controller's /.auth/verify. */}}
{{- define "msal-gateway.forwardAuth" -}}
{{- if eq .Values.mode "forward-auth" -}}true{{- end -}}
{{- end -}}

{{/* gateway.publicUrl, refused when it is plain http without the development switch or for a
     host other than loopback: the gateway would refuse the latter at start-up anyway, and the
     former is a production mistake (cookies without Secure) that should stop `helm install`. */}}
{{- define "msal-gateway.publicUrl" -}}
{{- $url := required "gateway.publicUrl is required" .Values.gateway.publicUrl -}}
{{- if hasPrefix "http://" (lower $url) -}}
{{- if not .Values.gateway.allowHttp -}}
{{- fail (printf "gateway.publicUrl is %s: plain http is for development only; use https://, or set gateway.allowHttp=true for a loopback host (http://localhost:8000 through kubectl port-forward)" $url) -}}
{{- end -}}
{{- $host := (urlParse $url).hostname -}}
{{- if not (or (eq $host "localhost") (hasPrefix "127." $host) (eq $host "::1")) -}}
{{- fail (printf "gateway.publicUrl is %s: http is accepted only for a loopback host (localhost, 127.0.0.1, [::1]); use https:// for %s" $url $host) -}}
{{- end -}}
{{- end -}}
{{- $url -}}
{{- end -}}

{{/* Names only the chart sets: gateway.env and gateway.extraEnv may not repeat them. GATEWAY_MODE
     and GATEWAY_UPSTREAM follow from `mode` and app.port even when the chart leaves them out. */}}
{{- define "msal-gateway.reservedEnv" -}}
{{- $names := keys (include "msal-gateway.managedEnv" . | fromYaml) -}}
{{- $names = concat $names (list "GATEWAY_MODE" "GATEWAY_UPSTREAM" "GATEWAY_COOKIE_SECRET_FILE" "GATEWAY_COOKIE_SECRET" "GATEWAY_CLIENT_SECRET_FILE" "GATEWAY_CLIENT_SECRET" "GATEWAY_REDIS_URL") -}}
{{- if and (eq .Values.redis.mode "sentinel") .Values.redis.sentinel.sentinelPasswordSecret.name -}}
{{- $names = append $names "GATEWAY_REDIS__SENTINEL_PASSWORD" -}}
{{- end -}}
{{- toJson (uniq $names) -}}
{{- end -}}

{{/* The settings the chart derives from its values. gateway.env may not repeat these names. */}}
{{- define "msal-gateway.managedEnv" -}}
{{- $v := .Values -}}
{{- $env := dict
  "GATEWAY_LISTEN" (printf "0.0.0.0:%d" (int $v.gateway.port))
  "GATEWAY_PUBLIC_URL" (include "msal-gateway.publicUrl" .)
  "GATEWAY_WORKERS" (toString $v.gateway.workers)
  "GATEWAY_PROXY__DRAIN_SECONDS" (toString (int $v.gateway.drainSeconds))
  "GATEWAY_PROXY__SHUTDOWN_GRACE_SECONDS" (toString (int $v.gateway.shutdownGraceSeconds))
  "GATEWAY_SESSION_STORE" (ternary "memory" "redis" (eq $v.redis.mode "none"))
-}}
{{- if include "msal-gateway.forwardAuth" . -}}
{{- /* No upstream: the ingress controller relays the requests the gateway approves. */ -}}
{{- $_ := set $env "GATEWAY_MODE" "forward-auth" -}}
{{- else -}}
{{- $_ := set $env "GATEWAY_UPSTREAM" (printf "http://127.0.0.1:%d" (int $v.app.port)) -}}
{{- end -}}
{{- if not $v.workloadIdentity.enabled -}}
{{- $_ := set $env "GATEWAY_CLIENT_ID" (required "gateway.clientId is required" $v.gateway.clientId) -}}
{{- $_ := set $env "GATEWAY_TENANT_ID" (required "gateway.tenantId is required" $v.gateway.tenantId) -}}
{{- end -}}
{{- if $v.metrics.enabled -}}
{{- $_ := set $env "GATEWAY_METRICS_LISTEN" (printf "0.0.0.0:%d" (int $v.metrics.port)) -}}
{{- end -}}
{{- if include "msal-gateway.devRedis" . -}}
{{- $_ := set $env "GATEWAY_REDIS_URL" (printf "redis://%s-redis:6379/0" (include "msal-gateway.fullname" .)) -}}
{{- /* No TLS, no password: tolerable only because its NetworkPolicy admits these pods alone. */ -}}
{{- $_ := set $env "GATEWAY_REDIS__ALLOW_INSECURE" "true" -}}
{{- end -}}
{{- if eq $v.redis.mode "sentinel" -}}
{{- $s := $v.redis.sentinel -}}
{{- if not $s.sentinels -}}{{- fail "redis.sentinel.sentinels must list the sentinels (host:port)" -}}{{- end -}}
{{- $_ := set $env "GATEWAY_REDIS__SENTINELS" (join " " $s.sentinels) -}}
{{- $_ := set $env "GATEWAY_REDIS__SENTINEL_MASTER" $s.masterName -}}
{{- $_ := set $env "GATEWAY_REDIS__TLS" (toString $s.tls) -}}
{{- $_ := set $env "GATEWAY_REDIS__CHECK_HOSTNAME" (toString $s.checkHostname) -}}
{{- if $s.username -}}
{{- $_ := set $env "GATEWAY_REDIS__USERNAME" $s.username -}}
{{- end -}}
{{- if $s.caConfigMap.name -}}
{{- $_ := set $env "GATEWAY_REDIS__CA_FILE" (printf "/etc/msal-gateway/redis-ca/%s" $s.caConfigMap.key) -}}
{{- end -}}
{{- if $s.passwordSecret.name -}}
{{- $_ := set $env "GATEWAY_REDIS__PASSWORD_FILE" (printf "/var/run/secrets/redis/%s" $s.passwordSecret.key) -}}
{{- end -}}
{{- end -}}
{{- toYaml $env -}}
{{- end -}}

{{/* What a ServiceMonitor or PodMonitor needs: the metrics listener, and only one of them (both
     would scrape every pod twice). */}}
{{- define "msal-gateway.monitorChecks" -}}
{{- if not .Values.metrics.enabled -}}
{{- fail "serviceMonitor.enabled and podMonitor.enabled need metrics.enabled (the gateway's metrics listener)" -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled .Values.podMonitor.enabled -}}
{{- fail "serviceMonitor.enabled and podMonitor.enabled both scrape the same pods: enable one" -}}
{{- end -}}
{{- end -}}
